"""``make bench``: every benchmark in one run and one table of ratios, targets and met/missed.

Quick mode (default, under 10 minutes on 2 cores) uses small sizes; ``--full`` runs the sizes the
targets are defined at (8k/32k/128k images, 250k/1M/2M reviews, two peer rounds). Each script
writes its own JSON under ``benchmarks/results/``; this one collects their ``ratios`` into
``benchmarks/results/summary[_quick].json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import machine_info, print_table  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"


def plan(full: bool) -> list[tuple[str, list[str], Path]]:
    """(name, command arguments after the script, JSON it writes) for each benchmark."""
    tag = "" if full else "_quick"
    quick_args = {
        "read_throughput": [
            "--rows",
            "8000",
            "--size",
            "224",
            "--row-group-size",
            "128",
            "--passes",
            "6",
            "--repeats",
            "2",
        ],
        "train_throughput": ["--quick"],
        "ingest_image": ["--kind", "image", "--quick"],
        "ingest_text": ["--kind", "text", "--quick"],
        "increment_image": ["--quick"],
        "fit_vs_peer": ["--rounds", "1"],
        "score_scale": ["--quick"],
        "demo_overhead": [],
    }
    full_args = {
        "read_throughput": ["--rows", "8000", "--size", "224", "--row-group-size", "128"],
        "train_throughput": [],
        "ingest_image": ["--kind", "image", "--small-heap"],
        "ingest_text": ["--kind", "text", "--small-heap"],
        "increment_image": [],
        "fit_vs_peer": ["--rounds", "2"],
        "score_scale": [],
        "demo_overhead": [],
    }
    scripts = {
        "read_throughput": "read_throughput.py",
        "train_throughput": "train_throughput.py",
        "ingest_image": "ingest_scale.py",
        "ingest_text": "ingest_scale.py",
        "increment_image": "increment_scale.py",
        "fit_vs_peer": "fit_vs_peer.py",
        "score_scale": "score_scale.py",
        "demo_overhead": "demo_overhead.py",
    }
    chosen = full_args if full else quick_args
    return [
        (
            name,
            [scripts[name], *chosen[name], "--out", str(RESULTS / f"{name}{tag}.json")],
            RESULTS / f"{name}{tag}.json",
        )
        for name in scripts
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="the target sizes (about an hour on 2 cores)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these benchmarks (names as listed)")
    parser.add_argument("--table-only", action="store_true", help="print the table from existing JSON files")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, runs = [], {}
    for name, command, out in plan(args.full):
        if args.only is not None and name not in args.only:
            continue
        if not args.table_only:
            print(f"== {name}: {' '.join(command)}", flush=True)
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, str(REPO_ROOT / "benchmarks" / command[0]), *command[1:]], cwd=REPO_ROOT
            )
            runs[name] = {"exit": done.returncode, "seconds": round(time.perf_counter() - started, 1)}
            if done.returncode != 0:
                rows.append(
                    {
                        "id": name,
                        "what": f"{name} did not run (exit {done.returncode})",
                        "value": None,
                        "target": "",
                        "met": False,
                        "detail": "see its output above",
                    }
                )
                continue
        if out.is_file():
            rows += json.loads(out.read_text()).get("ratios", [])
    summary = RESULTS / f"summary{'' if args.full else '_quick'}.json"
    summary.write_text(json.dumps({"machine": machine_info(), "runs": runs, "ratios": rows}, indent=2))
    print()
    print_table(rows)
    print(f"\n{sum(r['met'] for r in rows)} of {len(rows)} targets met; JSON: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
