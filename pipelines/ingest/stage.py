"""The ingest stage: the kind's ingest part over ``data.source`` (or the kind's demo data)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial

from pipelines.core.catalog import Catalog
from pipelines.core.config import PipelineConfig
from pipelines.core.stages import StageResult
from pipelines.ingest.increments import forget_snapshots
from pipelines.kinds import kind_of
from pipelines.runtime.spark import get_spark

log = logging.getLogger(__name__)


def source_of(config: PipelineConfig) -> str:
    """``data.source``, or the kind's demo data written under workdir when none is given."""
    if config.data.source:
        return config.data.source
    demo = kind_of(config).part("demo")(Catalog.for_workdir(config.workdir))
    log.info("no data.source given: using the demo data written to %s", demo)
    return str(demo)


def run(config: PipelineConfig, source: str | None = None, force: bool = False) -> StageResult:
    """Ingest ``source`` (default ``source_of(config)``); every file or record is accounted for.
    ``force`` forgets the snapshots (``ingest.increments``), so that everything is read again."""
    if force:
        forget_snapshots(Catalog.for_workdir(config.workdir))
    ingest = kind_of(config).part("ingest")
    report = asdict(ingest(config, partial(get_spark, config.spark), source or source_of(config)))
    unit, seen = (
        ("records", report["records_seen"]) if "records_seen" in report else ("files", report["files_seen"])
    )
    lines = [
        f"{unit} seen {seen} = written {report['rows_written']} + quarantined {report['rows_quarantined']}"
    ]
    increment = report.get("increment")
    if increment and not increment["whole"]:
        lines.append(
            f"increment {increment['number']}: read {increment['files_read']} files "
            f"({increment['added']} new, {increment['changed']} changed), dropped {increment['removed']} "
            f"removed, kept {increment['unchanged']} as written"
        )
    if report.get("empty_files"):
        lines.append(f"{report['empty_files']} of {report['files_seen']} files were empty (no records)")
    return StageResult({"ingest": report}, tuple(lines))
