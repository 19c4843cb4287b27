"""Ingest + preprocess at growing sizes, side by side with a single-process ceiling, in one run.

For each size: generate the data once (cached under ``--data-root``), then run, one after the other,
(1) the single-process baseline over the same files (images: a plain Pillow loop that reads, decodes,
converts to RGB and resizes every file with ``pipelines.ingest.decode_image``; text: none), and
(2) ``dlfusion ingest`` then ``dlfusion preprocess`` as separate processes with the default settings
(``spark.master=local[2]``), while a sampler records the peak resident memory of the driver JVM, the
Python driver and the largest Python worker.

Reported: the marginal rate between consecutive sizes (extra items / extra seconds, which removes
start-up cost) against the baseline's rate, the fixed cost of each stage (process wall time minus the
stage's own Spark work, and the intercept of the timing line), time growth from the second-largest
to the largest size, and memory growth from the smallest to the largest size.

Run from the repository root: ``.venv/bin/python benchmarks/ingest_scale.py --kind image``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import machine_info, ratio, warm_page_cache  # noqa: E402

DLFUSION = REPO_ROOT / ".venv" / "bin" / "dlfusion"
SIZES = {
    ("image", False): [8_000, 32_000, 128_000],
    ("image", True): [4_000, 8_000, 16_000],
    ("text", False): [250_000, 1_000_000, 2_000_000],
    ("text", True): [50_000, 100_000, 200_000],
}
CONFIGS = {"image": "conf/image_cnn.yaml", "text": "conf/text_lstm.yaml"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", choices=("image", "text"), default="image")
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--sizes", type=lambda text: [int(x) for x in text.split(",")], default=None)
    parser.add_argument("--image-size", type=int, default=64, help="ingest.image_size")
    parser.add_argument("--source-size", type=int, default=96, help="generated JPEGs are this square size")
    parser.add_argument(
        "--data-root", type=Path, default=Path.home() / ".cache" / "dlfusion" / "bench-data", help="cache"
    )
    parser.add_argument("--small-heap", action="store_true", help="also run the largest size with 1g driver")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default benchmarks/results/)")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or SIZES[(args.kind, args.quick)]
    suffix = "_quick" if args.quick else ""
    args.out = args.out or REPO_ROOT / "benchmarks" / "results" / f"ingest_scale_{args.kind}{suffix}.json"
    return args


# ---------------------------------------------------------------------------------------------- data


def make_data(kind: str, count: int, root: Path, source_size: int) -> Path:
    """Generated data of ``count`` items under ``root`` (reused when already there)."""
    from pipelines.kinds.image_cnn.demo import write_synthetic_images
    from pipelines.kinds.text_lstm.demo import write_reviews

    if kind == "image":
        return write_synthetic_images(root / f"images-{count}-{source_size}", count, size=source_size)
    return write_reviews(root / f"reviews-{count}.tsv", count=count)


def pillow_loop(folder: Path, image_size: int) -> dict:
    """The single-process ceiling: list, read, decode, convert and resize every file, in one loop."""
    from pipelines.kinds.image_cnn.ingest import decode_image

    started = time.perf_counter()
    files = [
        os.path.join(top, name)
        for top, _, names in os.walk(folder)
        for name in names
        if not name.startswith(("_", "."))
    ]
    decoded = 0
    for path in files:
        with open(path, "rb") as handle:
            decoded += len(decode_image(handle.read(), image_size)) > 0
    seconds = time.perf_counter() - started
    return {"files": len(files), "decoded": decoded, "seconds": seconds, "rate": len(files) / seconds}


def parallel_pillow_loop(folder: Path, image_size: int, processes: int) -> dict:
    """``pillow_loop`` split over ``processes`` processes (one folder each, in turn): the rate a
    perfectly parallel decode reaches on this machine, with no other overhead at all."""
    from concurrent.futures import ProcessPoolExecutor

    folders = sorted(path for path in folder.iterdir() if path.is_dir())
    started = time.perf_counter()
    with ProcessPoolExecutor(processes) as pool:
        parts = list(pool.map(pillow_loop, folders, [image_size] * len(folders)))
    seconds = time.perf_counter() - started
    files = sum(part["files"] for part in parts)
    return {"files": files, "processes": processes, "seconds": seconds, "rate": files / seconds}


# ---------------------------------------------------------------------------------------------- runs


class MemorySampler:
    """Peak RSS of a process tree, by role: the driver JVM, the Python driver, the largest Python worker."""

    def __init__(self, root_pid: int, interval_s: float = 0.2):
        self.root = psutil.Process(root_pid)
        self.interval_s = interval_s
        self.peaks = {"driver_jvm": 0, "python_driver": 0, "python_worker": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for process in processes:
                try:
                    rss, name = process.memory_info().rss, process.name()
                    role = (
                        "python_driver"
                        if process.pid == self.root.pid
                        else "driver_jvm"
                        if name == "java"
                        else "python_worker"
                        if "python" in name
                        else None
                    )
                except psutil.Error:
                    continue
                if role:
                    self.peaks[role] = max(self.peaks[role], rss)
            self._stop.wait(self.interval_s)


def run_stage(stage: str, kind: str, workdir: Path, source: Path, overrides: list[str]) -> dict:
    """Run ``dlfusion STAGE`` as its own process; its wall time, summary JSON and memory peaks."""
    summary = workdir / f"{stage}.json"
    command = [
        str(DLFUSION),
        stage,
        CONFIGS[kind],
        f"workdir={workdir}",
        f"data.source={source}",
        "spark.master=local[2]",
        *overrides,
        "--summary-json",
        str(summary),
    ]
    log = open(workdir / f"{stage}.log", "w")  # noqa: SIM115 - closed below
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    with MemorySampler(process.pid) as sampler:
        code = process.wait()
    seconds = time.perf_counter() - started
    log.close()
    if code != 0:
        tail = (workdir / f"{stage}.log").read_text()[-3000:]
        raise SystemExit(f"dlfusion {stage} failed (exit {code}):\n{tail}")
    result = json.loads(summary.read_text())
    return {
        "seconds": seconds,
        "summary": result,
        "peak_rss_mb": {k: v / 2**20 for k, v in sampler.peaks.items()},
    }


def measure(args: argparse.Namespace, count: int, heap: str | None = None) -> dict:
    source = make_data(args.kind, count, args.data_root, args.source_size)
    overrides = [f"ingest.image_size={args.image_size}"] if args.kind == "image" else []
    if heap:
        overrides.append(f"spark.conf={{spark.driver.memory: {heap}}}")
    row: dict = {"count": count, "heap": heap}
    warm_page_cache(source)
    if args.kind == "image" and heap is None:
        row["baseline"] = pillow_loop(source, args.image_size)
        row["parallel_baseline"] = parallel_pillow_loop(source, args.image_size, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="dlfusion-scale-") as tmp:
        for stage in ("ingest", "preprocess"):
            row[stage] = run_stage(stage, args.kind, Path(tmp), source, overrides)
    ingest = row["ingest"]["summary"]["ingest"]
    # A text ingest counts records (lines) as well as the files they came from: records are what
    # the rows written and quarantined add up to.
    seen = ingest.get("records_seen", ingest.get("files_seen"))
    row["accounted"] = seen == ingest["rows_written"] + ingest["rows_quarantined"] and (
        args.kind == "text" or seen == count
    )
    row["seconds"] = row["ingest"]["seconds"] + row["preprocess"]["seconds"]
    ingest_s, preprocess_s = row["ingest"]["seconds"], row["preprocess"]["seconds"]
    print(
        f"  {count:>9,}: ingest {ingest_s:6.1f} s + preprocess {preprocess_s:6.1f} s"
        + (f", Pillow loop {row['baseline']['seconds']:6.1f} s" if "baseline" in row else "")
        + f", accounted {row['accounted']}",
        flush=True,
    )
    return row


def analyse(kind: str, rows: list[dict]) -> dict:
    """Marginal rates, fixed costs, growth and the target ratios from the measured rows."""
    rows = sorted(rows, key=lambda row: row["count"])
    small, mid, large = rows[0], rows[-2], rows[-1]
    marginal = (large["count"] - mid["count"]) / max(large["seconds"] - mid["seconds"], 1e-9)
    fixed = {}
    for stage in ("ingest", "preprocess"):
        in_stage = large[stage]["summary"].get(stage, {}).get("seconds") or 0.0
        fixed[stage] = {
            "process_minus_spark_work_s": large[stage]["seconds"] - in_stage,
            "spark_jobs": large[stage]["summary"].get(stage, {}).get("spark_jobs"),
        }
    intercept = large["seconds"] - large["count"] / marginal
    analysis = {"marginal_rate": marginal, "fixed_cost": fixed, "intercept_s": intercept}
    unit = "files" if kind == "image" else "records"
    size_ratio = large["count"] / mid["count"]
    growth = large["seconds"] / mid["seconds"]
    ratios = []
    if kind == "image":
        ceiling = large["baseline"]["rate"]
        analysis["baseline_rate"] = ceiling
        ratios.append(
            ratio(
                "I1",
                f"image ingest+preprocess marginal rate / single-process Pillow loop ({mid['count']:,}->"
                f"{large['count']:,} {unit})",
                marginal / ceiling,
                1.5,
                f"{marginal:,.0f} vs {ceiling:,.0f} {unit}/s",
            )
        )
        parallel = large["parallel_baseline"]
        ratios.append(
            ratio(
                "I1.machine",
                f"the same Pillow loop in {parallel['processes']} processes / in 1: the most I1 could reach "
                "here with zero overhead",
                parallel["rate"] / ceiling,
                1.7,
                f"{parallel['rate']:,.0f} vs {ceiling:,.0f} {unit}/s (decode only, no Parquet, no split)",
            )
        )
    prefix = "I" if kind == "image" else "T"
    ratios.append(
        ratio(
            f"{prefix}2",
            f"{kind}: time({large['count']:,}) / time({mid['count']:,}) (sizes x{size_ratio:g})",
            growth,
            1.1 * size_ratio,
            f"{large['seconds']:.1f} s vs {mid['seconds']:.1f} s",
            higher_is_better=False,
        )
    )
    for role in ("driver_jvm", "python_driver", "python_worker"):
        peaks = [
            max(row[stage]["peak_rss_mb"][role] for stage in ("ingest", "preprocess"))
            for row in (small, large)
        ]
        ratios.append(
            ratio(
                f"{prefix}3.{role}",
                f"{kind}: peak RSS {role.replace('_', ' ')} {large['count']:,} / {small['count']:,} {unit}",
                peaks[1] / max(peaks[0], 1e-9),
                1.10,
                f"{peaks[1]:.0f} MiB vs {peaks[0]:.0f} MiB",
                higher_is_better=False,
            )
        )
    accounted = all(row["accounted"] for row in rows)
    ratios.append(
        ratio(
            f"{prefix}4",
            f"{kind}: every item accounted for at every size",
            float(accounted),
            1.0,
            "seen = written + quarantined",
        )
    )
    analysis["ratios"] = ratios
    return analysis


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not DLFUSION.exists():
        print(f"{DLFUSION} not found: run `make test` or `make run` first to create .venv", file=sys.stderr)
        return 2
    args.data_root.mkdir(parents=True, exist_ok=True)
    before = machine_info()
    print(f"ingest scale ({args.kind}), sizes {args.sizes}:", flush=True)
    rows = [measure(args, count) for count in args.sizes]
    analysis = analyse(args.kind, rows)
    if args.small_heap:
        heap_row = measure(args, args.sizes[-1], heap="1g")
        analysis["ratios"].append(
            ratio(
                f"{'I' if args.kind == 'image' else 'T'}5",
                f"{args.kind}: largest size passes with spark.driver.memory=1g",
                float(heap_row["accounted"]),
                1.0,
                f"{heap_row['seconds']:.1f} s",
            )
        )
        rows.append(heap_row)
    result = {
        "benchmark": f"ingest_scale_{args.kind}",
        "machine_before": before,
        "machine_after": machine_info(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        **analysis,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    from benchmarks.common import print_table

    print_table(result["ratios"])
    print(
        f"fixed cost at the largest size: {json.dumps(analysis['fixed_cost'])}; intercept "
        f"{analysis['intercept_s']:.1f} s; JSON: {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
