"""An incremental ingest + preprocess against a whole one, side by side in one run (issue 20).

For each size (generated 96x96 JPEGs, at 64x64): a source folder of that many files (hard links to
the cached set), a whole ``dlfusion ingest`` + ``dlfusion preprocess``, then new files (1% of the
size; 4%, and 10% or at least 2,500 files, at the largest) added and both stages run again, each
stage its own process as a user runs it. Reported:

- I6: increment of 1% / whole ingest + preprocess at the largest size, fixed costs included;
- a fit of every measured increment to ``fixed + per_read * files read + per_file * files listed``,
  and from it the cost of a 1% increment at 1,000,000 files: what grows with the increment, and
  what grows with the data set (listing it and the preprocess passes over its small columns). Its
  10,000 files are more than ``ingest.driver_increment_files``: they are decoded in Spark tasks, so
  the estimate starts from the measured increment that was (10% at the largest size).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import machine_info, print_table, ratio, warm_page_cache  # noqa: E402
from benchmarks.ingest_scale import DLFUSION, make_data, run_stage  # noqa: E402

SIZES = {False: [8_000, 32_000], True: [4_000, 8_000]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--image-size", type=int, default=64, help="ingest.image_size")
    parser.add_argument(
        "--data-root", type=Path, default=Path.home() / ".cache" / "dlfusion" / "bench-data", help="cache"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default benchmarks/results/)")
    args = parser.parse_args(argv)
    args.sizes = SIZES[args.quick]
    suffix = "_quick" if args.quick else ""
    args.out = args.out or REPO_ROOT / "benchmarks" / "results" / f"increment_scale{suffix}.json"
    return args


def _linked_source(cached: Path, target: Path) -> Path:
    """A source folder of hard links to the cached files (free to add files to)."""
    for folder in sorted(path for path in cached.iterdir() if path.is_dir()):
        (target / folder.name).mkdir(parents=True)
        for file in folder.iterdir():
            os.link(file, target / folder.name / file.name)
    return target


def _add_files(source: Path, extra: Path, count: int, tag: str) -> None:
    """Link ``count`` files of the ``extra`` set into ``source`` under new names."""
    files = sorted(path for path in extra.glob("*/*") if not path.name.startswith("_"))[:count]
    for file in files:
        os.link(file, source / file.parent.name / f"{tag}-{file.name}")


def _both_stages(workdir: Path, source: Path, overrides: list[str]) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    rows = {
        stage: run_stage(stage, "image", workdir, source, overrides) for stage in ("ingest", "preprocess")
    }
    increment = rows["ingest"]["summary"]["ingest"]["increment"]
    return {
        "seconds": rows["ingest"]["seconds"] + rows["preprocess"]["seconds"],
        "ingest_s": rows["ingest"]["seconds"],
        "preprocess_s": rows["preprocess"]["seconds"],
        # Inside each stage, after the process, its imports and the Spark session have started.
        "ingest_in_stage_s": rows["ingest"]["summary"]["ingest"]["seconds"],
        "preprocess_in_stage_s": rows["preprocess"]["summary"]["preprocess"]["seconds"],
        "files_read": increment["files_read"],
        # 0: decoded in the ingest process itself (ingest.driver_increment_files), Spark not started.
        "ingest_spark_jobs": rows["ingest"]["summary"]["ingest"]["spark_jobs"],
        "files_listed": rows["ingest"]["summary"]["ingest"]["files_seen"],
        "whole": increment["whole"],
        "accounted": rows["ingest"]["summary"]["ingest"]["files_seen"]
        == rows["ingest"]["summary"]["ingest"]["rows_written"]
        + rows["ingest"]["summary"]["ingest"]["rows_quarantined"],
    }


def measure(args, count: int, extra: Path, shares: list[float]) -> dict:
    cached = make_data("image", count, args.data_root, 96)
    overrides = [f"ingest.image_size={args.image_size}"]
    with tempfile.TemporaryDirectory(prefix="dlfusion-increment-") as tmp:
        source = _linked_source(cached, Path(tmp) / "source")
        warm_page_cache(source)
        warm_page_cache(extra)
        whole = _both_stages(Path(tmp) / "work", source, overrides)
        steps = []
        for number, share in enumerate(shares):
            _add_files(source, extra, int(count * share), f"n{number}")
            step = _both_stages(Path(tmp) / "work", source, overrides)
            steps.append({"share": share, **step})
            print(
                f"  {count:>7,}: whole {whole['seconds']:5.1f} s; +{share:.0%} increment "
                f"{step['seconds']:5.1f} s (ingest {step['ingest_s']:.1f}, preprocess "
                f"{step['preprocess_s']:.1f}; read {step['files_read']:,} of {step['files_listed']:,})",
                flush=True,
            )
        shutil.rmtree(Path(tmp) / "work", ignore_errors=True)
    return {"count": count, "whole": whole, "increments": steps}


def analyse(rows: list[dict]) -> dict:
    """I6 and I7, and the arithmetic of a 1% increment at 1,000,000 files from measured costs: the
    fixed cost (the smallest size's increment less its per-file parts), the cost per file read
    (the whole ingest's marginal between the sizes) and per file listed (the increments' growth
    between the sizes, less their files read)."""
    small, large = rows[0], rows[-1]
    extra = large["count"] - small["count"]
    per_read = (large["whole"]["ingest_s"] - small["whole"]["ingest_s"]) / extra
    inc_small, inc_large = (
        next(s for s in row["increments"] if s["share"] == 0.01) for row in (small, large)
    )
    read_growth = inc_large["files_read"] - inc_small["files_read"]
    listed_growth = inc_large["files_listed"] - inc_small["files_listed"]
    per_listed = max(
        0.0, (inc_large["seconds"] - inc_small["seconds"] - per_read * read_growth) / listed_growth
    )
    fixed = inc_small["seconds"] - per_read * inc_small["files_read"] - per_listed * inc_small["files_listed"]
    # 1% of a million files is more than ingest.driver_increment_files: that increment starts Spark,
    # as the largest size's increment in Spark tasks did; it is the base, the rest scaled from it.
    in_tasks = [step for step in large["increments"] if step["ingest_spark_jobs"]]
    base = in_tasks[-1] if in_tasks else {"seconds": fixed, "files_read": 0, "files_listed": 0}
    million = {
        "base_s": base["seconds"],
        "read_s": per_read * (10_000 - base["files_read"]),
        "listed_s": per_listed * (1_000_000 - base["files_listed"]),
    }
    million["total_s"] = sum(million.values())
    # The whole ingest + preprocess starts Spark: its own intercept, not the increments' fixed cost.
    whole_fixed = small["whole"]["seconds"] - (per_read + per_listed) * small["count"]
    whole_million = whole_fixed + (per_read + per_listed) * 1_000_000
    steps = [step for row in rows for step in row["increments"]]
    ratios = [
        ratio(
            "I6",
            f"ingest + preprocess of 1% new files / of the whole set ({large['count']:,} files, "
            "fixed costs in)",
            inc_large["seconds"] / large["whole"]["seconds"],
            1 / 3,
            f"{inc_large['seconds']:.1f} s vs {large['whole']['seconds']:.1f} s; read "
            f"{inc_large['files_read']:,} of {inc_large['files_listed']:,} files",
            higher_is_better=False,
        ),
        ratio(
            "I6.million",
            "the same at 1,000,000 files, from the measured fixed and per-file costs",
            million["total_s"] / whole_million,
            1 / 3,
            f"{million['total_s']:.0f} s ({million['base_s']:.0f} measured for {base['files_read']:,} read "
            f"of {base['files_listed']:,} + {million['read_s']:.0f} reading the rest of 10,000 + "
            f"{million['listed_s']:.0f} listing the rest of 1,000,000) vs {whole_million:.0f} s",
            higher_is_better=False,
        ),
        ratio(
            "I7",
            "every file accounted for after every increment",
            float(all(step["accounted"] and not step["whole"] for step in steps)),
            1.0,
            "seen = written + quarantined; each an increment",
        ),
    ]
    return {
        "costs": {
            "fixed_s": fixed,
            "per_file_read_ms": per_read * 1e3,
            "per_file_listed_ms": per_listed * 1e3,
        },
        "one_percent_of_a_million": million,
        "whole_million_s": whole_million,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not DLFUSION.exists():
        print(f"{DLFUSION} not found: run `make test` or `make run` first to create .venv", file=sys.stderr)
        return 2
    before = machine_info()
    started = time.perf_counter()
    print(f"increment scale, sizes {args.sizes}:", flush=True)
    # New files come from another generated set (another seed: other images).
    from pipelines.kinds.image_cnn.demo import write_synthetic_images

    largest = args.sizes[-1]
    # The last step is past ingest.driver_increment_files (2,000 files), so it runs in Spark tasks.
    shares = [0.01, 0.04, max(0.1, 2_500 / largest)]
    extra_count = int(largest * sum(shares)) + 1
    extra = write_synthetic_images(
        args.data_root / f"images-extra-{extra_count}-96", extra_count, size=96, seed=7
    )
    rows = [measure(args, count, extra, [0.01] if count != largest else shares) for count in args.sizes]
    analysis = analyse(rows)
    costs, million = analysis["costs"], analysis["one_percent_of_a_million"]
    print(
        f"costs: {costs['fixed_s']:.1f} s fixed + {costs['per_file_read_ms']:.3f} ms per file read + "
        f"{costs['per_file_listed_ms']:.4f} ms per file listed; 1% of 1,000,000 files: "
        f"{million['total_s']:.0f} s, the whole set {analysis['whole_million_s']:.0f} s",
        flush=True,
    )
    result = {
        "benchmark": "increment_scale",
        "machine_before": before,
        "machine_after": machine_info(),
        "seconds": time.perf_counter() - started,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        **analysis,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print_table(result["ratios"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
