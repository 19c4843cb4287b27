"""Read throughput of the training input path, side by side, on one generated Parquet data set.

(a) pyarrow ceiling: ``ParquetFile.read_row_group`` + ``np.frombuffer`` over every row group;
(r) the petastorm reader generator that feeds (b) and (c), iterated in Python without tf.data
    (locates the cost of the tf.data boundary);
(b) our loader: ``pipelines.train.loader.split_dataset`` (make_batch_reader -> batches cut in a
    background thread -> tf.data without a copy), iterated fully, several passes, with the process RSS
    recorded after each pass (memory must stay flat across epochs);
(c) the same reader decoded per row: ``.unbatch().map(decode one row).batch()``.

The data set (random uint8 images as a binary ``pixels`` column, int32 ``label``, string
``relpath``) is written with pyarrow into a temporary folder and removed afterwards.
Run from the repository root: ``.venv/bin/python benchmarks/read_throughput.py`` (``make bench``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("benchmarks.read_throughput")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "read_throughput.json"
CLASS_NAMES = ["class_0", "class_1", "class_2", "class_3", "class_4"]

# Benchmark this checkout's ``pipelines`` even where the package is not installed in editable mode.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import checkout_info, ratio  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000, help="rows in the generated data set")
    parser.add_argument("--size", type=int, default=64, help="images are SIZE x SIZE x 3 uint8")
    parser.add_argument("--row-group-size", type=int, default=1_000, help="rows per Parquet row group")
    parser.add_argument("--files", type=int, default=2, help="Parquet files the row groups are spread over")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size of the tf.data readers")
    parser.add_argument(
        "--shuffle-buffer", type=int, default=512, help="(b)'s row shuffle window (train.shuffle_buffer)"
    )
    parser.add_argument(
        "--passes", type=int, default=30, help="passes of (b); RSS is compared between the halves"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of (a), (r) and (c)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="parent of the temporary data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    for name in ("rows", "size", "row_group_size", "files", "batch_size", "passes", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    # No empty files: at most one file per row group.
    args.files = min(args.files, -(-args.rows // args.row_group_size))
    return args


# ---------------------------------------------------------------------------------------------
# data


def write_dataset(
    root: Path, rows: int, size: int, row_group_size: int, files: int, seed: int, compression: str = "snappy"
) -> dict:
    """Write ``rows`` random images as Parquet under ``root``, one row group at a time (low memory).

    Row groups are spread evenly over ``files`` files named like Spark's ``part-*.parquet``, with
    Spark's default snappy compression.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    row_bytes = size * size * 3
    schema = pa.schema([("pixels", pa.binary()), ("label", pa.int32()), ("relpath", pa.string())])
    group_starts = list(range(0, rows, row_group_size))
    per_file = -(-len(group_starts) // files)
    written = 0
    for file_index in range(files):
        starts = group_starts[file_index * per_file : (file_index + 1) * per_file]
        if not starts:
            break
        path = root / f"part-{file_index:05d}.parquet"
        with pq.ParquetWriter(path, schema, compression=compression) as writer:
            for start in starts:
                count = min(row_group_size, rows - start)
                flat = rng.integers(0, 256, size=count * row_bytes, dtype=np.uint8)
                offsets = np.arange(0, (count + 1) * row_bytes, row_bytes, dtype=np.int32)
                pixels = pa.BinaryArray.from_buffers(
                    pa.binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(flat)]
                )
                labels = pa.array(rng.integers(0, len(CLASS_NAMES), size=count, dtype=np.int32))
                relpaths = pa.array(
                    [
                        f"{CLASS_NAMES[label]}/img_{start + i:07d}.png"
                        for i, label in enumerate(labels.to_numpy())
                    ]
                )
                table = pa.Table.from_arrays([pixels, labels, relpaths], schema=schema)
                writer.write_table(table, row_group_size=row_group_size)
                written += count
    disk_bytes = sum(path.stat().st_size for path in root.glob("*.parquet"))
    return {"rows": written, "row_groups": len(group_starts), "files": files, "disk_bytes": disk_bytes}


# ---------------------------------------------------------------------------------------------
# the readers: each returns the number of rows it read in one full pass


def binary_as_images(pixels: pa.BinaryArray, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """A binary array of equal-length rows viewed (no copy) as uint8 images of ``shape``."""
    _, offsets_buffer, data_buffer = pixels.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[pixels.offset : pixels.offset + len(pixels) + 1]
    row_bytes = int(np.prod(shape))
    if pixels.null_count or np.any(np.diff(offsets) != row_bytes):
        raise ValueError(f"{where}: pixel rows are not all {row_bytes} bytes")
    return np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]].reshape((-1, *shape))


def read_pyarrow(root: Path, shape: tuple[int, int, int]) -> int:
    """(a) Every row group with pyarrow, pixels viewed as a uint8 array without a per-row copy."""
    rows = 0
    for path in sorted(root.glob("*.parquet")):
        parquet_file = pq.ParquetFile(path)
        for index in range(parquet_file.num_row_groups):
            table = parquet_file.read_row_group(index, columns=["pixels", "label"])
            # Chunk by chunk: ``combine_chunks`` copies even a single chunk (pyarrow 14), which
            # would charge the ceiling a copy of every image.
            images = [
                binary_as_images(chunk, shape, f"{path} row group {index}")
                for chunk in table.column("pixels").chunks
            ]
            images = images[0] if len(images) == 1 else np.concatenate(images)
            labels = table.column("label").to_numpy()
            if len(labels) != images.shape[0]:
                raise ValueError(
                    f"{path} row group {index}: {len(labels)} labels for {images.shape[0]} images"
                )
            rows += images.shape[0]
    return rows


def read_petastorm(root: Path, readers: int = 1) -> int:
    """(r) The petastorm generator that feeds (b) and (c), alone: where the tf.data boundary costs.
    With ``readers`` > 1, that many readers in parallel (``train.reader_workers``)."""
    from pipelines.train.loader import _row_group_batches

    rows = 0
    for pixels, labels in _row_group_batches(root.resolve().as_uri(), 0, 1, 0, 1, 0, readers=readers):
        if len(pixels) != len(labels):
            raise ValueError(f"{len(pixels)} pixel rows for {len(labels)} labels")
        rows += len(labels)
    return rows


def count_rows(dataset: Iterable) -> int:
    rows = 0
    for images, _labels in dataset:
        rows += int(images.shape[0])
    return rows


def loader_dataset(root: Path, transform, batch_size: int, shuffle_buffer: int, readers: int = 1):
    """(b) The project's loader as training uses it (rows shuffled in windows of ``shuffle_buffer``),
    one pass per iteration (``repeat=False``)."""
    from pipelines.train.loader import split_dataset

    return split_dataset(
        root,
        transform,
        batch_size=batch_size,
        rank=0,
        size=1,
        seed=0,
        shuffle_buffer=shuffle_buffer,
        repeat=False,
        readers=readers,
    )


def per_row_dataset(root: Path, transform, batch_size: int):
    """(c) The same petastorm reader and generator, but decoding one row at a time in tf.data."""
    import tensorflow as tf

    from pipelines.train.loader import _row_group_batches

    url = root.resolve().as_uri()
    height, width, channels = transform.shape

    def generate():
        return _row_group_batches(url, 0, 1, 0, 1, 0)

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(tf.TensorSpec((None,), tf.string), tf.TensorSpec((None,), tf.int32)),
    )

    def decode_one(pixels, label):
        return tf.reshape(tf.io.decode_raw(pixels, tf.uint8), (height, width, channels)), label

    dataset = dataset.unbatch().map(decode_one, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# measurement


def rss_bytes() -> int:
    """Resident memory of this process and any children it has (petastorm process pools)."""
    process = psutil.Process()
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed_passes(
    name: str, run_pass: Callable[[], int], passes: int, expected_rows: int, warm_up: bool = True
) -> list[dict]:
    """Time ``passes`` full passes, after one untimed pass (imports, file opening, tf.data tracing)."""
    if warm_up:
        start = time.perf_counter()
        rows = run_pass()
        log.info("%s warm-up pass: %d rows in %.2f s (not counted)", name, rows, time.perf_counter() - start)
    results = []
    for index in range(passes):
        start = time.perf_counter()
        rows = run_pass()
        seconds = time.perf_counter() - start
        if rows != expected_rows:
            raise RuntimeError(f"{name} pass {index + 1} read {rows} rows, expected {expected_rows}")
        result = {
            "pass": index + 1,
            "rows": rows,
            "seconds": seconds,
            "rows_per_s": rows / seconds,
            "rss_bytes": rss_bytes(),
            "peak_rss_bytes": peak_rss_bytes(),
        }
        log.info(
            "%s pass %d/%d: %d rows in %.2f s (%.0f rows/s), RSS %.0f MiB",
            name,
            index + 1,
            passes,
            rows,
            seconds,
            result["rows_per_s"],
            result["rss_bytes"] / 2**20,
        )
        results.append(result)
    return results


def summarize(passes: list[dict], row_bytes: int) -> dict:
    """Median over the timed passes (robust to the odd slow pass on a shared 2-core machine)."""
    rows_per_s = statistics.median(result["rows_per_s"] for result in passes)
    return {
        "rows_per_s": rows_per_s,
        "mb_per_s": rows_per_s * row_bytes / 1e6,
        "first_pass_rows_per_s": passes[0]["rows_per_s"],
        "min_rows_per_s": min(result["rows_per_s"] for result in passes),
        "max_rows_per_s": max(result["rows_per_s"] for result in passes),
        "passes": passes,
    }


def memory_summary(passes: list[dict]) -> dict:
    """RSS after the first and the last pass, the highest RSS in each half, and the trend of the second half.

    The first pass includes importing TensorFlow and building the pipeline, and the allocators take
    a number of passes to reach their working size; "flat across epochs" means the second half of
    the passes adds nothing: its highest RSS is not above the first half's and its trend is ~0.
    """
    rss = [result["rss_bytes"] for result in passes]
    half = len(passes) // 2
    later = passes[half:]
    slope = 0.0
    if len(later) >= 2:
        slope = float(np.polyfit([r["pass"] for r in later], [r["rss_bytes"] for r in later], 1)[0])
    return {
        "passes": len(passes),
        "rss_after_first_pass_bytes": rss[0],
        "rss_after_last_pass_bytes": rss[-1],
        "rss_growth_bytes": rss[-1] - rss[0],
        "rss_max_first_half_bytes": max(rss[: max(half, 1)]),
        "rss_max_second_half_bytes": max(rss[half:]),
        "second_half_first_pass": half + 1,
        "rss_slope_second_half_bytes_per_pass": slope,
        "peak_rss_after_first_pass_bytes": passes[0]["peak_rss_bytes"],
        "peak_rss_after_last_pass_bytes": passes[-1]["peak_rss_bytes"],
        "peak_rss_growth_bytes": passes[-1]["peak_rss_bytes"] - passes[0]["peak_rss_bytes"],
    }


def machine_info(load_before: tuple[float, float, float]) -> dict:
    import petastorm
    import tensorflow as tf

    return {
        "load_average_1_5_15_before": list(load_before),
        "load_average_1_5_15_after": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "packages": {
            "numpy": np.__version__,
            "pyarrow": pa.__version__,
            "petastorm": petastorm.__version__,
            "tensorflow": tf.__version__,
            "psutil": psutil.__version__,
        },
    }


def format_table(figures: dict, ratios: dict) -> str:
    labels = {
        "a_pyarrow": "(a) pyarrow read_row_group + np.frombuffer",
        "r_reader": "(r) petastorm reader alone, no tf.data",
        "b_loader": "(b) split_dataset (the training loader)",
        "r2_readers": "(r2) two petastorm readers alone",
        "b2_loader": "(b2) split_dataset, train.reader_workers=2",
        "c_per_row": "(c) same reader, per-row decode",
    }
    lines = [f"{'method':<50} {'rows/s':>10} {'MB/s':>8}", "-" * 70]
    for key, label in labels.items():
        lines.append(f"{label:<50} {figures[key]['rows_per_s']:>10,.0f} {figures[key]['mb_per_s']:>8,.0f}")
    lines.append("-" * 70)
    lines.append(f"{'(b)/(a) loader vs pyarrow ceiling':<50} {ratios['b_over_a']:>10.2f}")
    lines.append(f"{'(c)/(b) per-row vs vectorized decode':<50} {ratios['c_over_b']:>10.2f}")
    lines.append(f"{'(r)/(a) petastorm reader vs pyarrow ceiling':<50} {ratios['r_over_a']:>10.2f}")
    lines.append(f"{'(b)/(r) tf.data boundary (loader vs its reader)':<50} {ratios['b_over_r']:>10.2f}")
    memory = figures["b_loader"]["memory"]
    lines.append(
        f"(b) RSS after pass 1: {memory['rss_after_first_pass_bytes'] / 2**20:.0f} MiB, "
        f"after pass {memory['passes']}: {memory['rss_after_last_pass_bytes'] / 2**20:.0f} MiB "
        f"(growth {memory['rss_growth_bytes'] / 2**20:+.1f} MiB; peak growth "
        f"{memory['peak_rss_growth_bytes'] / 2**20:+.1f} MiB)"
    )
    half = memory["second_half_first_pass"]
    lines.append(
        f"(b) highest RSS in passes 1-{max(half - 1, 1)}: "
        f"{memory['rss_max_first_half_bytes'] / 2**20:.0f} MiB, "
        f"in passes {half}-{memory['passes']}: {memory['rss_max_second_half_bytes'] / 2**20:.0f} MiB; "
        f"trend over passes {half}-{memory['passes']}: "
        f"{memory['rss_slope_second_half_bytes_per_pass'] / 2**20:+.1f} MiB/pass"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    from pipelines.kinds.image_cnn.transform import ImageTransform

    transform = ImageTransform(
        image_size=args.size, class_names=list(CLASS_NAMES), mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]
    )
    shape = transform.shape
    row_bytes = int(np.prod(shape))
    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        log.warning(
            "load average is %.2f on %d CPUs: other work is running and will lower the figures",
            load_before[0],
            os.cpu_count(),
        )
    with tempfile.TemporaryDirectory(prefix="dlfusion-bench-", dir=args.tmp_dir) as tmp:
        root = Path(tmp) / "images.parquet"
        start = time.perf_counter()
        data = write_dataset(root, args.rows, args.size, args.row_group_size, args.files, args.seed)
        log.info(
            "wrote %d rows (%d row groups, %d files, %.0f MB on disk) to %s in %.1f s",
            data["rows"],
            data["row_groups"],
            data["files"],
            data["disk_bytes"] / 1e6,
            root,
            time.perf_counter() - start,
        )
        rows = data["rows"]

        log.info("(a) pyarrow ceiling, %d passes", args.repeats)
        figures = {
            "a_pyarrow": summarize(
                timed_passes("(a)", lambda: read_pyarrow(root, shape), args.repeats, rows), row_bytes
            )
        }

        log.info("(r) petastorm reader alone, %d passes", args.repeats)
        r_passes = timed_passes("(r)", lambda: read_petastorm(root), args.repeats, rows)
        figures["r_reader"] = summarize(r_passes, row_bytes)

        log.info("(b) pipelines.train.loader.split_dataset, %d passes", args.passes)
        loader = loader_dataset(root, transform, args.batch_size, args.shuffle_buffer)
        # No warm-up: the first pass is part of the memory record (it includes importing TF).
        b_passes = timed_passes("(b)", lambda: count_rows(loader), args.passes, rows, warm_up=False)
        figures["b_loader"] = summarize(b_passes, row_bytes)

        log.info(
            "(r2) two petastorm readers alone, (b2) the loader with two readers, %d passes", args.repeats
        )
        r2_passes = timed_passes("(r2)", lambda: read_petastorm(root, readers=2), args.repeats, rows)
        figures["r2_readers"] = summarize(r2_passes, row_bytes)
        loader2 = loader_dataset(root, transform, args.batch_size, args.shuffle_buffer, readers=2)
        figures["b2_loader"] = summarize(
            timed_passes("(b2)", lambda: count_rows(loader2), args.repeats, rows), row_bytes
        )
        figures["b_loader"]["memory"] = memory_summary(b_passes)

        log.info("(c) per-row decode, %d passes", args.repeats)
        per_row = per_row_dataset(root, transform, args.batch_size)
        figures["c_per_row"] = summarize(
            timed_passes("(c)", lambda: count_rows(per_row), args.repeats, rows), row_bytes
        )

    shares = {
        "b_over_a": figures["b_loader"]["rows_per_s"] / figures["a_pyarrow"]["rows_per_s"],
        "c_over_b": figures["c_per_row"]["rows_per_s"] / figures["b_loader"]["rows_per_s"],
        "r_over_a": figures["r_reader"]["rows_per_s"] / figures["a_pyarrow"]["rows_per_s"],
        "b_over_r": figures["b_loader"]["rows_per_s"] / figures["r_reader"]["rows_per_s"],
    }
    return {
        "benchmark": "read_throughput",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(load_before),
        "checkout": checkout_info(),
        "parameters": {
            "rows": args.rows,
            "image_shape": list(shape),
            "row_bytes": row_bytes,
            "row_group_size": args.row_group_size,
            "files": args.files,
            "batch_size": args.batch_size,
            "passes_b": args.passes,
            "repeats_a_r_c": args.repeats,
            "seed": args.seed,
            "compression": "snappy",
        },
        "data": data,
        "figures": figures,
        "shares": shares,
        "ratios": [
            ratio(
                "P1",
                "training loader (split_dataset) / the petastorm reader it wraps, rows/s",
                shares["b_over_r"],
                0.8,
                f"{figures['b_loader']['mb_per_s']:,.0f} vs {figures['r_reader']['mb_per_s']:,.0f} MB/s at "
                f"{args.size}x{args.size}, shuffle buffer {args.shuffle_buffer} rows; pyarrow "
                f"{figures['a_pyarrow']['mb_per_s']:,.0f} MB/s",
            ),
            ratio(
                "P1.readers",
                "reader stage rate, 2 petastorm readers / 1 (consumer measured apart: (b2) vs (b))",
                figures["r2_readers"]["rows_per_s"] / figures["r_reader"]["rows_per_s"],
                1.0,
                f"readers {figures['r2_readers']['mb_per_s']:,.0f} vs {figures['r_reader']['mb_per_s']:,.0f} "
                f"MB/s; loader {figures['b2_loader']['mb_per_s']:,.0f} vs "
                f"{figures['b_loader']['mb_per_s']:,.0f} MB/s",
            ),
            ratio(
                "P1.rate",
                f"training loader MB/s at {args.size}x{args.size} / 1,000 MB/s per rank",
                figures["b_loader"]["mb_per_s"] / 1000,
                1.0,
                f"{figures['b_loader']['mb_per_s']:,.0f} MB/s, "
                f"{figures['b_loader']['rows_per_s']:,.0f} images/s; RSS growth after pass 1 "
                f"{figures['b_loader']['memory']['rss_growth_bytes'] / 2**20:+.0f} MiB",
            ),
        ],
        "notes": (
            "rows_per_s is the median over passes; MB/s counts the uint8 pixel payload "
            "(rows/s x row_bytes / 1e6). RSS is the process (and any child) resident memory after each "
            "pass of (b); peak RSS is ru_maxrss of this process."
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pipelines.runtime.logs import setup_logging

    setup_logging()
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(format_table(results["figures"], results["shares"]))
    log.info("results written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
