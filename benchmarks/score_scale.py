"""Batch scoring at two sizes, side by side with a single-process ceiling, in one run.

A CNN with the shipped architecture (untrained weights: the cost of a prediction does not depend on
them) is logged as the image kind's MLflow model. For each size, every file is read once (both
passes find the page cache warm), then one after the other: (1) the plain process a user would
write: read, decode and resize every file (``decode_image``) and predict in batches of 256 with
``mlflow.pyfunc.load_model``; (2) ``dlfusion score`` (``spark.master=local[2]``) while a sampler
records the peak resident memory of the driver JVM, the Python driver and the largest Python worker.

Reported: the marginal rate between the two sizes (extra files / extra seconds, which removes the
start-up cost of both) against the plain process's, and the growth of each process's peak memory
from the smaller to the larger size. Run from the repository root:
``.venv/bin/python benchmarks/score_scale.py --quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the plain process's download
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import machine_info, ratio, warm_page_cache  # noqa: E402
from benchmarks.ingest_scale import make_data, run_stage  # noqa: E402

SIZES = {False: [8_000, 32_000], True: [4_000, 8_000]}
CLASSES = [str(digit) for digit in range(10)]


def log_model(workdir: Path, image_size: int) -> tuple[str, str]:
    """Log an untrained CNN as the image kind's pyfunc; return (model URI, tracking URI)."""
    import mlflow

    from models.cnn import build_cnn
    from pipelines.kinds.image_cnn.transform import ImageTransform
    from pipelines.pipeline.config_files import load_config
    from pipelines.preprocess.transforms import save_transform
    from pipelines.track import pyfunc

    config = load_config(REPO_ROOT / "conf" / "image_cnn.yaml", [f"workdir={workdir}"])
    transform = ImageTransform(image_size, CLASSES, [127.0] * 3, [64.0] * 3)
    model = build_cnn(transform.shape, len(CLASSES), transform.mean, transform.std)
    model.save(workdir / "model.keras")
    save_transform(transform, workdir / "transform.json")
    mlflow.set_tracking_uri(config.tracking_uri)
    mlflow.set_experiment("score-benchmark")
    with mlflow.start_run() as run:
        pass
    uri = pyfunc.log_model(config, run.info.run_id, workdir / "model.keras", workdir / "transform.json")
    return uri, config.tracking_uri


def plain_process(folder: Path, image_size: int, model_uri: str, tracking_uri: str) -> dict:
    """The single-process ceiling: decode every file and predict in batches, in one loop."""
    import mlflow
    import numpy as np

    from pipelines.kinds.image_cnn.ingest import decode_image

    started = time.perf_counter()
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    files = sorted(
        os.path.join(top, name)
        for top, _, names in os.walk(folder)
        for name in names
        if not name.startswith(("_", "."))
    )
    predicted = 0
    for start in range(0, len(files), 256):
        batch = []
        for path in files[start : start + 256]:
            with open(path, "rb") as handle:
                batch.append(np.frombuffer(decode_image(handle.read(), image_size), np.uint8))
        images = np.stack(batch).reshape(-1, image_size, image_size, 3)
        predicted += len(np.asarray(model.predict(images)))
    seconds = time.perf_counter() - started
    return {"files": len(files), "predicted": predicted, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4,000 and 8,000 files (else 8,000 and 32,000)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--source-size", type=int, default=96, help="side of the generated JPEGs")
    parser.add_argument("--data-root", type=Path, default=Path.home() / ".cache" / "dlfusion" / "bench-data")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "score_scale.json")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="dlfusion-score-") as tmp:
        workdir = Path(tmp)
        model_uri, tracking_uri = log_model(workdir, args.image_size)
        for count in SIZES[args.quick]:
            source = make_data("image", count, args.data_root, args.source_size)
            warm_page_cache(source)
            plain = plain_process(source, args.image_size, model_uri, tracking_uri)
            overrides = [f"model_uri={model_uri}", f"output={workdir / f'scores-{count}'}"]
            scored = run_stage("score", "image", workdir, source, overrides)
            report = scored["summary"]["score"]
            row = {
                "count": count,
                "plain": plain,
                "score": scored,
                "accounted": report["inputs"] == report["scored"] + report["quarantined"] == count,
            }
            rows.append(row)
            print(
                f"  {count:>7,}: dlfusion score {scored['seconds']:6.1f} s, plain process "
                f"{plain['seconds']:6.1f} s, accounted {row['accounted']}",
                flush=True,
            )

    small, large = rows
    extra = large["count"] - small["count"]
    score_rate = extra / (large["score"]["seconds"] - small["score"]["seconds"])
    plain_rate = extra / (large["plain"]["seconds"] - small["plain"]["seconds"])
    growth = {
        role: large["score"]["peak_rss_mb"][role] / max(small["score"]["peak_rss_mb"][role], 1e-9)
        for role in small["score"]["peak_rss_mb"]
    }
    ratios = [
        ratio(
            "S1",
            "score: marginal files/s vs one plain Python process (decode + predict)",
            round(score_rate / plain_rate, 2),
            1.5,
            f"{score_rate:,.0f} vs {plain_rate:,.0f} files/s, "
            f"between {small['count']:,} and {large['count']:,} files",
        ),
        ratio(
            "S2",
            "score: largest process peak memory, larger / smaller size",
            round(max(growth.values()), 2),
            1.2,
            ", ".join(f"{role} x{value:.2f}" for role, value in growth.items()),
            higher_is_better=False,
        ),
        ratio(
            "S3",
            "score: every input accounted (inputs = scored + quarantined)",
            float(all(row["accounted"] for row in rows)),
            1.0,
        ),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(), "rows": rows, "ratios": ratios}, indent=2))
    for row in ratios:
        print(f"  {row['id']} {row['what']}: {row['value']} (target {row['target']}) {row['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
