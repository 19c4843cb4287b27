"""Ingested -> split Parquet and the fitted transform that turns rows into model input."""
