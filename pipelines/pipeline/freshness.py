"""Skip what is done: a stage whose inputs and config did not change since its last success is skipped.

When a stage succeeds it leaves a record (``Catalog.stage_record``) of what it read — the config keys
it depends on, the data listing (ingest) or its upstream stage's output digest — of a digest of what
it wrote, and of its summary. The next run compares: everything equal and the outputs still as
written means skip (the summary is reused); otherwise the stage runs, and the reason is logged.
A run that died midway therefore continues from its first incomplete stage, and a changed training
key re-runs train and what follows, not ingest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.core.config import PipelineConfig, flatten
from pipelines.core.stages import BY_NAME, CHAIN
from pipelines.io import atomic, filesystems

log = logging.getLogger(__name__)

# The config sections each stage depends on (the stage table's); the one with None (train) depends
# on every key no other stage owns.
OWN_KEYS: dict[str, tuple[str, ...]] = {
    name: BY_NAME[name].config_sections for name in CHAIN if BY_NAME[name].config_sections is not None
}
# Keys that say how or where to run, not what to compute: changing them redoes nothing.
NOT_INPUTS = (
    "workdir",
    "spark",
    "score",
    "retention",
    "train.resume",
    "train.stall_timeout_s",
    "train.start_timeout_s",
)
# What each stage writes, as locations whose files are digested; evaluate and promote write to
# MLflow only, so their digest is that of their summary.
OUTPUTS: dict[str, Callable[[Catalog, str], list]] = {
    "ingest": lambda c, kind: [c.ingested, c.quarantine, c.ingest_report],
    "preprocess": lambda c, kind: [
        *(c.split(name) for name in SPLITS),
        c.transform,
        c.preprocess_report,
        c.profile,
    ],
    "train": lambda c, kind: [c.latest_run(kind)],
}


@dataclass(frozen=True)
class Check:
    """Whether a stage can be skipped, and why (or why not)."""

    skip: bool
    reason: str
    inputs: dict
    summary: dict | None = None  # the recorded success's summary, when skipped


def check(stage: str, config: PipelineConfig, source: str | None = None, force: bool = False) -> Check:
    """Compare ``stage``'s inputs now with its last success's record. ``source``: ingest's data."""
    catalog = Catalog.for_workdir(config.workdir)
    inputs = {
        "config": stage_keys(stage, config),
        "upstream": _upstream_digest(stage, catalog, config.pipeline),
    }
    if source is not None:
        inputs["data"] = source_digest(source)
    record = _read_record(catalog, stage, config.pipeline)
    if force:
        return Check(False, "--force", inputs)
    if record is None:
        return Check(False, "no earlier success recorded", inputs)
    changed = _what_changed(stage, record["inputs"], inputs)
    if changed:
        return Check(False, changed, inputs)
    if _output_digest(stage, catalog, config.pipeline, record["summary"]) != record["outputs"]:
        return Check(False, "its outputs changed or are missing", inputs)
    reason = f"unchanged since {record['finished']} (same inputs and config)"
    return Check(True, reason, inputs, record["summary"])


def record_success(stage: str, config: PipelineConfig, inputs: dict, summary: dict) -> None:
    """Write the stage's record after it succeeded (the summary as JSON, as the summary file has it)."""
    catalog = Catalog.for_workdir(config.workdir)
    summary = json.loads(json.dumps(summary, default=str))
    record = {
        "stage": stage,
        "inputs": inputs,
        "outputs": _output_digest(stage, catalog, config.pipeline, summary),
        "summary": summary,
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    atomic.write_json_atomically(record, catalog.stage_record(_record_name(stage, config.pipeline)))


def forget(stage: str, config: PipelineConfig) -> None:
    """Drop the stage's record before it runs: a run that fails midway must not look done."""
    path = Catalog.for_workdir(config.workdir).stage_record(_record_name(stage, config.pipeline))
    if filesystems.is_file(path):
        fs, inner, _ = filesystems.filesystem(path)
        fs.delete_file(inner)


def stage_keys(stage: str, config: PipelineConfig) -> dict:
    """The config keys (dotted) and values ``stage`` depends on."""
    flat = flatten(config.model_dump(mode="json"))
    if BY_NAME[stage].config_sections is None:
        owned = [prefix for keys in OWN_KEYS.values() for prefix in keys] + list(NOT_INPUTS)
        return {key: value for key, value in flat.items() if not _under(key, owned)}
    return {key: value for key, value in flat.items() if _under(key, OWN_KEYS[stage])}


def source_digest(source: str) -> dict:
    """Files, bytes and a digest of the listing of ``source`` (path, size, modification time); the
    listing ingest makes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    listing = filesystems.list_source(source).select(["relpath", "size", "mtime"]).combine_chunks()
    # The listing's Arrow buffers, hashed whole: no Python object per file (a million files listed
    # cost seconds that way).
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, listing.schema) as writer:
        writer.write_table(listing)
    total = pc.sum(listing.column("size")).as_py() or 0
    return {"files": listing.num_rows, "bytes": total, "digest": hashlib.sha256(sink.getvalue()).hexdigest()}


def _upstream_digest(stage: str, catalog: Catalog, kind: str) -> str | None:
    position = CHAIN.index(stage)
    if position == 0:
        return None
    upstream = CHAIN[position - 1]
    record = _read_record(catalog, upstream, kind)
    return _output_digest(upstream, catalog, kind, record["summary"] if record else None)


def _output_digest(stage: str, catalog: Catalog, kind: str, summary: dict | None) -> str | None:
    """A digest of the files ``stage`` wrote (names, sizes, modification times), or of its summary."""
    digest = hashlib.sha256()
    if stage not in OUTPUTS:
        if summary is None:
            return None
        digest.update(json.dumps(summary, sort_keys=True).encode())
        return digest.hexdigest()
    import pyarrow.fs as pafs

    for location in OUTPUTS[stage](catalog, kind):
        fs, inner, _ = filesystems.filesystem(location)
        info = fs.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            return None
        files = (
            [info]
            if info.type == pafs.FileType.File
            else fs.get_file_info(pafs.FileSelector(inner, recursive=True))
        )
        for entry in sorted(files, key=lambda e: e.path):
            if entry.type == pafs.FileType.File:
                digest.update(f"{entry.path}\0{entry.size}\0{entry.mtime_ns}\n".encode())
    return digest.hexdigest()


def _what_changed(stage: str, before: dict, now: dict) -> str | None:
    keys = sorted(set(before["config"]) | set(now["config"]))
    changed = [key for key in keys if before["config"].get(key) != now["config"].get(key)]
    if changed:
        shown = ", ".join(
            f"{key} ({before['config'].get(key)!r} -> {now['config'].get(key)!r})" for key in changed[:3]
        )
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return f"config changed: {shown}{more}"
    if before.get("data") != now.get("data"):
        was, new = before.get("data") or {}, now.get("data") or {}
        now_size, was_size = (
            f"{new.get('files')} files, {new.get('bytes')} bytes",
            f"{was.get('files')}, {was.get('bytes')}",
        )
        return f"the data changed ({now_size}; was {was_size})"
    if before["upstream"] != now["upstream"]:
        return f"the output of {CHAIN[CHAIN.index(stage) - 1]} changed"
    return None


def _read_record(catalog: Catalog, stage: str, kind: str) -> dict | None:
    path = catalog.stage_record(_record_name(stage, kind))
    try:
        return atomic.read_json(path)
    except (OSError, json.JSONDecodeError):  # none yet (or unreadable): the stage runs
        return None


def _record_name(stage: str, kind: str) -> str:
    return f"{kind}.{stage}" if BY_NAME[stage].per_kind else stage


def _under(key: str, prefixes) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)
