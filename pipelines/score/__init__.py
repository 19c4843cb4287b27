"""New raw data -> predictions of a logged model (the champion by default), as Parquet."""
