"""Shared by the benchmark scripts: the machine a figure was taken on, and the ratio table."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def warm_page_cache(source: Path) -> int:
    """Read every file under ``source`` once, so that each timed pass finds it in the page cache
    (a cold cache slows whichever pass runs first at a size, not the code it times). Returns the
    bytes read."""
    total = 0
    for top, _, names in os.walk(source) if source.is_dir() else [(source.parent, [], [source.name])]:
        for name in names:
            with open(os.path.join(top, name), "rb") as handle:
                while chunk := handle.read(1 << 20):
                    total += len(chunk)
    return total


def checkout_info() -> dict:
    """The commit benchmarked, and whether pipelines/, models/ or benchmarks/ had uncommitted changes
    (figures only compare within one checkout)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "pipelines", "models", "benchmarks"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted_changes": None}
    return {"commit": commit, "uncommitted_changes": bool(changes.strip())}


def machine_info() -> dict:
    """CPUs, memory, load average and commit: what a figure depends on besides the code."""
    import psutil

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "unknown"
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "commit": commit,
    }


def ratio(
    id: str, what: str, value: float, target: float, detail: str = "", higher_is_better: bool = True
) -> dict:
    """One row of the benchmark table: a measured ratio against its target."""
    met = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    return {
        "id": id,
        "what": what,
        "value": value,
        "target": f"{sign} {target:g}",
        "met": bool(met),
        "detail": detail,
    }


def print_table(rows: list[dict]) -> None:
    """Print ratio rows as one aligned table: id, what, value, target, met/missed, detail."""
    header = ("id", "what", "value", "target", "", "detail")
    lines = [
        (
            r["id"],
            r["what"],
            "n/a" if r["value"] is None else f"{r['value']:.2f}",
            r["target"],
            "skipped" if r["value"] is None else "met" if r["met"] else "MISSED",
            r.get("detail", ""),
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    for line in (header, *lines):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
