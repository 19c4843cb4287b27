"""Retention: how many of a workdir's per-run folders and log files a nightly job keeps."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def keep_newest_snapshots(catalog, keep: int | None) -> list[str]:
    """``keep_newest`` of the ingest snapshots of a local workdir (the newest is the one the next
    ingest compares with, so at least it stays)."""
    from pipelines.core.locations import is_uri

    if is_uri(catalog.snapshots):
        return []
    return keep_newest(Path(catalog.snapshots), keep)


def keep_newest(folder: Path, keep: int | None, protect: set[str] = frozenset()) -> list[str]:
    """Keep ``keep`` entries of ``folder`` (files or folders): those named in ``protect`` (never
    deleted), then the most recently modified; delete the others. ``keep=None`` keeps everything.
    Returns the names deleted."""
    if keep is None or not folder.is_dir():
        return []
    entries = sorted(folder.iterdir(), key=lambda entry: entry.stat().st_mtime, reverse=True)
    kept = [entry for entry in entries if entry.name in protect]
    deleted = []
    for entry in entries:
        if entry.name in protect:
            continue
        if len(kept) < keep:
            kept.append(entry)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        deleted.append(entry.name)
    if deleted:
        log.info(
            "retention: deleted %d of %d in %s (keeping the newest %d)",
            len(deleted),
            len(entries),
            folder,
            keep,
        )
    return deleted
