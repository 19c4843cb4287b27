"""Declared Parquet schemas: each kind declares its data sets' (``pipelines/kinds/*/schemas.py``);
writers select exactly those columns with ``conform``."""

from pyspark.sql.types import StructType


def conform(df, schema: StructType, keep: tuple[str, ...] = ()):
    """Select and cast ``df``'s columns to ``schema`` (in its order), so what is written is declared;
    ``keep`` columns (e.g. the one a write is partitioned by) follow unchanged."""
    from pyspark.sql import functions as F

    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields], *keep)
