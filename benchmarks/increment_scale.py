"""An incremental ingest + preprocess against a whole one, side by side in one run (issue 20).

For each size (generated 96x96 JPEGs, at 64x64): a source folder of that many files (hard links to
the cached set), a whole ``dlfusion ingest`` + ``dlfusion preprocess``, then new files (1% of the
size, and 4% at the largest) added and both stages run again, each stage its own process as a user
runs it. Reported:

- I6: increment of 1% / whole ingest + preprocess at the largest size, fixed costs included;
- a fit of every measured increment to ``fixed + per_read * files read + per_file * files listed``,
  and from it the cost of a 1% increment at 1,000,000 files: what grows with the increment, and
  what grows with the data set (listing it and the preprocess passes over its small columns).
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

import numpy as np

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
    rows = {
        stage: run_stage(stage, "image", workdir, source, overrides) for stage in ("ingest", "preprocess")
    }
    increment = rows["ingest"]["summary"]["ingest"]["increment"]
    return {
        "seconds": rows["ingest"]["seconds"] + rows["preprocess"]["seconds"],
        "ingest_s": rows["ingest"]["seconds"],
        "preprocess_s": rows["preprocess"]["seconds"],
        "files_read": increment["files_read"],
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
    steps = [step for row in rows for step in row["increments"]]
    design = np.array([[1.0, step["files_read"], step["files_listed"]] for step in steps])
    seconds = np.array([step["seconds"] for step in steps])
    (fixed, per_read, per_listed), *_ = np.linalg.lstsq(design, seconds, rcond=None)
    million = {"fixed_s": fixed, "read_s": per_read * 10_000, "listed_s": per_listed * 1_000_000}
    million["total_s"] = sum(million.values())
    large = rows[-1]
    one_percent = next(step for step in large["increments"] if step["share"] == 0.01)
    ratios = [
        ratio(
            "I6",
            f"ingest + preprocess of 1% new files / of the whole set ({large['count']:,} files, "
            "fixed costs in)",
            one_percent["seconds"] / large["whole"]["seconds"],
            1 / 3,
            f"{one_percent['seconds']:.1f} s vs {large['whole']['seconds']:.1f} s; read "
            f"{one_percent['files_read']:,} of {one_percent['files_listed']:,} files",
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
        "fit": {"fixed_s": fixed, "per_file_read_ms": per_read * 1e3, "per_file_listed_ms": per_listed * 1e3},
        "one_percent_of_a_million": million,
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

    extra_count = int(args.sizes[-1] * 0.05)
    extra = write_synthetic_images(
        args.data_root / f"images-extra-{extra_count}-96", extra_count, size=96, seed=7
    )
    rows = [
        measure(args, count, extra, [0.01] if count != args.sizes[-1] else [0.01, 0.04])
        for count in args.sizes
    ]
    analysis = analyse(rows)
    fit, million = analysis["fit"], analysis["one_percent_of_a_million"]
    print(
        f"fit: {fit['fixed_s']:.1f} s fixed + {fit['per_file_read_ms']:.3f} ms per file read + "
        f"{fit['per_file_listed_ms']:.4f} ms per file listed; 1% of 1,000,000 files: "
        f"{million['total_s']:.0f} s ({million['fixed_s']:.0f} fixed + {million['read_s']:.0f} reading "
        f"10,000 + {million['listed_s']:.0f} for the 1,000,000 listed)",
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
