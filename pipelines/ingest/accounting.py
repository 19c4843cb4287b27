"""Accounted writes shared by every ingest: each record goes to exactly one of two folders, and the
number seen must equal the number written plus the number quarantined, counted from the footers."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.core.catalog import Catalog
from pipelines.core.errors import DataError
from pipelines.io import parquet, spark_writes


@dataclass(frozen=True)
class Accounted:
    written: int
    quarantined: int
    classes: int


def outcome_locations(catalog: Catalog) -> dict:
    """Where ``write_by_reason`` puts each outcome: the ingested and the quarantine tables."""
    return {"usable": catalog.ingested, "unusable": catalog.quarantine}


def write_by_reason(
    records: DataFrame, catalog: Catalog, schema: pa.Schema, append: str | None = None, **options: str
) -> list[tuple[str, str, int]]:
    """Write ``records`` in one pass: rows without a ``reason`` to the ingested table, the others to
    the quarantine (same declared columns, ``schema``), each replaced atomically; with ``append`` (an
    increment), joining the files there instead, named after it. Returns (outcome, file URI, rows)
    of each file written (``spark_writes.write_partitions``)."""
    outcome = F.when(F.col("reason").isNull(), F.lit("usable")).otherwise(F.lit("unusable"))
    return spark_writes.write_partitions(
        records.withColumn("outcome", outcome),
        "outcome",
        outcome_locations(catalog),
        schema,
        append=append,
        **options,
    )


def check_accounted(seen: int | None, catalog: Catalog, source: str, unit: str) -> Accounted:
    """Count the rows written and quarantined from the footers; check ``seen`` (when given) is their sum,
    and count the classes (distinct labels) from the label column alone, read in batches by pyarrow:
    no Spark job, so a workdir Spark cannot reach (a URI without its Hadoop connector) works too.

    Raises DataError when a row went missing or nothing was usable.
    """
    written = sum(parquet.row_group_sizes(catalog.ingested))
    quarantined = sum(parquet.row_group_sizes(catalog.quarantine))
    if seen is not None and seen != written + quarantined:
        raise DataError(
            source, f"{unit} seen ({seen}) != rows written ({written}) + rows quarantined ({quarantined})"
        )
    if written == 0:
        raise DataError(source, f"no usable {unit} found: {_most_common_reason(catalog)}")
    labels: set = set()  # None too, if any: as Spark's distinct() counts it
    for batch in parquet.column_batches(catalog.ingested, ["label"]):
        labels.update(pc.unique(batch.column(0)).to_pylist())
    return Accounted(written, quarantined, len(labels))


def _most_common_reason(catalog: Catalog) -> str:
    """What stopped most of the quarantined rows, and where the rest are listed."""
    from collections import Counter

    reasons: Counter = Counter()
    for batch in parquet.column_batches(catalog.quarantine, ["reason"]):
        reasons.update(batch.column(0).to_pylist())
    if not reasons:
        return f"nothing was read (see the quarantine table {catalog.quarantine})"
    reason, count = reasons.most_common(1)[0]
    return f"{count} of {reasons.total()} {reason} (all reasons: the quarantine table {catalog.quarantine})"
