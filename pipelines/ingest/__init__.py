"""Raw data -> ingested Parquet, every file accounted for (each kind's ``ingest`` part uses this)."""
