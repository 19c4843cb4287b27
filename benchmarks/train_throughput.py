"""Training throughput, side by side: streamed vs in-memory data (P2), Horovod ranks vs threads (P3).

One run writes one synthetic data set with ``read_throughput.write_dataset`` (random uint8
``--size`` x ``--size`` x 3 images, int32 labels, row groups of ``--row-group-size`` rows, by
default uncompressed 128-row groups of 32x32 images as ``conf/image_cnn.yaml`` writes its splits), then
trains the project's CNN (``models.cnn.build_cnn`` with the pipeline's default layers, Adam,
sparse categorical cross-entropy, ``jit_compile=False`` as ``pipelines.train`` compiles it)
with ``model.fit`` and a fixed number of steps per epoch (``--rows`` // global batch):

P2 (one spawned process, TF intra/inter op threads set to ``--threads``): two models, one fed by
    (s) ``pipelines.train.loader.split_dataset`` (rank 0 of 1, ``--shuffle-buffer`` rows, the
        training default), one by (m) the same rows as numpy arrays in memory (``model.fit(x, y,
        shuffle=True)``); after an untimed warm-up epoch each, ``--p2-pairs`` pairs of one-epoch fits,
        (m) and (s) in turn. Target: median over pairs of (s)/(m) samples/s >= 0.95.
P3 (Horovod, gloo, the ranks started by ``pipelines.runtime.local_ranks`` as the pipeline starts them):
    2 ranks x 1 TF thread each at ``--batch-size`` / 2 per rank vs 1 rank x ``--threads`` threads at
    ``--batch-size``, both fed by ``split_dataset`` and trained with the project's adapter
    (``pipelines.train.horovod_keras.distributed(Adam)`` + ``BroadcastInitialState``); the two launches
    alternate ``--rounds`` times. The grouped allreduce inside the adapter's optimizer is timed in
    the graph (``tf.timestamp`` once the gradients exist and once the averaged ones do), so the
    time per step it reports includes waiting for the slower rank. Target: (2x1)/(1x2) >= 0.9.

Samples/s are steps x global batch / epoch seconds (P3: median over the epochs after the first,
which traces the step function and fills the pipeline). Load average before/after is recorded;
the machine is shared, so only ratios measured side by side mean anything.
Run from the repository root: ``.venv/bin/python benchmarks/train_throughput.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

log = logging.getLogger("benchmarks.train_throughput")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "train_throughput.json"
CLASS_NAMES = ["class_0", "class_1", "class_2", "class_3", "class_4"]
LEARNING_RATE = 0.001
P2_TARGET, P3_TARGET = 0.95, 0.9

# Benchmark this checkout's ``pipelines``; the Horovod ranks import this module by name.
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from benchmarks.common import checkout_info, ratio  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000, help="rows in the generated data set")
    parser.add_argument("--size", type=int, default=32, help="images are SIZE x SIZE x 3 uint8")
    parser.add_argument(
        "--row-group-size",
        type=int,
        default=128,
        help="rows per Parquet row group (conf/image_cnn.yaml: 128)",
    )
    parser.add_argument(
        "--compression",
        choices=["none", "snappy", "zstd", "lz4"],
        default="none",
        help="Parquet codec of the data (conf/image_cnn.yaml: none)",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument(
        "--epochs", type=int, default=4, help="P3: epochs per launch (the first is not timed)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="P3: launches of each configuration, alternating"
    )
    parser.add_argument("--p2-pairs", type=int, default=6, help="P2: pairs of timed one-epoch fits")
    parser.add_argument(
        "--identity-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="P3: also run 2x1 with the allreduce replaced by the identity (step time without it)",
    )
    parser.add_argument("--threads", type=int, default=2, help="TF threads of the single-process runs")
    parser.add_argument("--shuffle-buffer", type=int, default=512, help="split_dataset shuffle buffer")
    parser.add_argument("--only", choices=["P2", "P3"], default=None, help="run one comparison only")
    parser.add_argument("--quick", action="store_true", help="small run (< 3 minutes): smoke test")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="parent of the temporary data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.epochs, args.rounds, args.p2_pairs = min(args.rows, 2_048), min(args.epochs, 3), 1, 2
        args.identity_baseline = False
    for name in ("rows", "size", "row_group_size", "batch_size", "rounds", "threads", "p2_pairs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed)")
    if args.batch_size % 2:
        parser.error("--batch-size must be even (P3 splits it over 2 ranks)")
    if args.rows < 2 * args.row_group_size:
        parser.error("--rows must hold at least 2 row groups (P3 gives each rank one)")
    return args


# ---------------------------------------------------------------------------------------------
# on every training process (P2's child, each P3 rank)


def _set_threads(threads: int) -> None:
    """Pin TF's thread pools before TF starts (as ``pipelines.train.rank_loop._pin_devices`` does)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))


def _transform(size: int):
    from pipelines.kinds.image_cnn.transform import ImageTransform

    # Uniform random pixels: mean 127.5, std about 73.9.
    return ImageTransform(size, list(CLASS_NAMES), [127.5] * 3, [73.9] * 3)


def _compiled_model(transform, optimizer_class):
    import keras

    from models.cnn import build_cnn

    keras.utils.set_random_seed(0)
    model = build_cnn(transform.shape, len(CLASS_NAMES), transform.mean, transform.std)
    model.compile(
        optimizer=optimizer_class(learning_rate=LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )
    return model


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall seconds of every epoch."""

        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def _rate(seconds: list[float], samples_per_epoch: int) -> dict:
    """Samples/s over the epochs after the first (median), and every epoch's seconds."""
    timed = seconds[1:]
    return {
        "samples_per_s": samples_per_epoch / statistics.median(timed),
        "epoch_seconds": seconds,
        "samples_per_epoch": samples_per_epoch,
    }


def p2_child(root: str, args: argparse.Namespace) -> dict:
    """P2 in a fresh process (TF threads are set before TF starts).

    Two models, one fed by ``split_dataset`` (s) and one by numpy arrays (m), each fit once for an
    untimed warm-up epoch (tracing), then ``--p2-pairs`` pairs of one-epoch fits, (m) and (s) in
    turn (the order alternating from pair to pair), so that both sides of a pair see the same load.
    """
    import keras
    import numpy as np
    import pyarrow.parquet as pq

    from pipelines.runtime.logs import quiet_library_warnings, setup_logging
    from pipelines.train.loader import split_dataset

    setup_logging()
    quiet_library_warnings()
    _set_threads(args.threads)
    transform = _transform(args.size)
    steps = args.rows // args.batch_size
    used = steps * args.batch_size  # the same samples per epoch on both sides
    table = pq.read_table(root, columns=["pixels", "label"])
    images = transform.to_images(table.column("pixels").to_pylist()[:used])
    labels = table.column("label").to_numpy()[:used].astype(np.int32)
    streamed = split_dataset(
        root,
        transform,
        batch_size=args.batch_size,
        rank=0,
        size=1,
        seed=0,
        shuffle_buffer=args.shuffle_buffer,
    )
    models = {side: _compiled_model(transform, keras.optimizers.Adam) for side in ("memory", "streaming")}

    def one_epoch(side: str) -> float:
        timer = _epoch_timer()
        if side == "memory":
            models[side].fit(
                images,
                labels,
                batch_size=args.batch_size,
                epochs=1,
                callbacks=[timer],
                shuffle=True,
                verbose=0,
            )
        else:
            models[side].fit(
                streamed, epochs=1, steps_per_epoch=steps, callbacks=[timer], shuffle=False, verbose=0
            )
        return timer.seconds[0]

    warm_up = {side: one_epoch(side) for side in models}
    pairs = []
    for index in range(args.p2_pairs):
        order = ("memory", "streaming") if index % 2 == 0 else ("streaming", "memory")
        seconds = {side: one_epoch(side) for side in order}
        rates = {side: used / seconds[side] for side in models}
        pairs.append(
            {"seconds": seconds, "samples_per_s": rates, "ratio": rates["streaming"] / rates["memory"]}
        )
        log.info(
            "P2 pair %d/%d: in-memory %.0f, streamed %.0f samples/s (ratio %.3f)",
            index + 1,
            args.p2_pairs,
            rates["memory"],
            rates["streaming"],
            pairs[-1]["ratio"],
        )
    return {
        "pairs": pairs,
        "warm_up_seconds": warm_up,
        "steps_per_epoch": steps,
        "samples_per_epoch": used,
        "load_average_after": list(os.getloadavg()),
    }


def _timed_allreduce(hvd) -> dict:
    """Wrap ``hvd.grouped_allreduce`` (which the adapter calls once per step) to time it in the graph.

    From when every gradient exists, a scalar allreduce first waits for the other ranks ("wait":
    the skew between ranks), then the grouped allreduce runs ("transfer": averaging the gradients).
    The added scalar allreduce costs one more small collective per step.
    """
    import tensorflow as tf

    original = hvd.grouped_allreduce
    totals = {
        "wait": tf.Variable(0.0, dtype=tf.float64),
        "transfer": tf.Variable(0.0, dtype=tf.float64),
        "calls": tf.Variable(0, dtype=tf.int64),
    }

    def timed(tensors, *args, **kwargs):
        with tf.control_dependencies(tensors):
            start = tf.timestamp()
        with tf.control_dependencies([start]):
            synced = hvd.allreduce(tf.zeros(()), op=hvd.Sum, name="bench.barrier")
        with tf.control_dependencies([synced]):
            middle = tf.timestamp()
            tensors = [tf.identity(tensor) for tensor in tensors]
        averaged = original(tensors, *args, **kwargs)
        with tf.control_dependencies(averaged):
            end = tf.timestamp()
        totals["wait"].assign_add(middle - start)
        totals["transfer"].assign_add(end - middle)
        totals["calls"].assign_add(1)
        return averaged

    hvd.grouped_allreduce = timed
    return totals


def _reset_after_first_epoch(totals: dict):
    """A callback that zeroes the allreduce totals when the second epoch begins (the first traces)."""
    import keras

    class Reset(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                for variable in totals.values():
                    variable.assign(variable * 0)

    return Reset()


def rank_worker(root: str, args: argparse.Namespace, threads: int, allreduce: bool = True) -> dict:
    """One Horovod rank of P3: train on this rank's shard with the project's adapter.

    Without ``allreduce`` the adapter's gradient averaging is replaced by the identity (the ranks
    then train apart after the initial broadcast): the step time without the collective.
    """
    import horovod.tensorflow as hvd
    import keras

    from pipelines.runtime.logs import quiet_library_warnings
    from pipelines.train import horovod_keras as hk
    from pipelines.train.loader import split_dataset

    quiet_library_warnings()
    _set_threads(threads)
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    totals = _timed_allreduce(hvd)
    if not allreduce:
        hvd.grouped_allreduce = lambda tensors, *args, **kwargs: list(tensors)
    transform = _transform(args.size)
    per_rank = args.batch_size // size
    steps = args.rows // args.batch_size
    model = _compiled_model(transform, hk.distributed(keras.optimizers.Adam))
    model.optimizer.build(model.trainable_variables)
    data = split_dataset(
        root,
        transform,
        batch_size=per_rank,
        rank=rank,
        size=size,
        seed=0,
        shuffle_buffer=args.shuffle_buffer,
    )
    timer = _epoch_timer()
    model.fit(
        data,
        epochs=args.epochs,
        steps_per_epoch=steps,
        callbacks=[hk.BroadcastInitialState(), _reset_after_first_epoch(totals), timer],
        shuffle=False,
        verbose=0,
    )
    calls = int(totals["calls"].numpy())
    wait, transfer = float(totals["wait"].numpy()), float(totals["transfer"].numpy())
    return {
        "rank": rank,
        "size": size,
        "threads": threads,
        "allreduce": allreduce,
        "per_rank_batch": per_rank,
        **_rate(timer.seconds, steps * args.batch_size),
        "allreduce_calls_timed": calls,
        "allreduce_wait_ms_per_step": 1e3 * wait / calls if calls else 0.0,
        "allreduce_transfer_ms_per_step": 1e3 * transfer / calls if calls else 0.0,
        "allreduce_ms_per_step": 1e3 * (wait + transfer) / calls if calls else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# on the driver


def _launch(
    root: str, args: argparse.Namespace, ranks: int, threads: int, allreduce: bool = True
) -> list[dict]:
    """Run ``rank_worker`` on ``ranks`` local gloo ranks, started as the pipeline starts them."""
    import train_throughput

    from pipelines.runtime import local_ranks

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
    results = local_ranks.run(train_throughput.rank_worker, (root, args, threads, allreduce), ranks, {})
    return sorted(results, key=lambda result: result["rank"])


def _in_spawned(function, *call_args):
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *call_args).result()


def run_p2(root: Path, args: argparse.Namespace) -> tuple[dict, dict]:
    log.info("P2: streamed vs in-memory model.fit, %d pairs of epochs in one process", args.p2_pairs)
    result = _in_spawned(p2_child, str(root), args)
    pairs = result["pairs"]
    value = statistics.median(pair["ratio"] for pair in pairs)
    streamed = statistics.median(pair["samples_per_s"]["streaming"] for pair in pairs)
    memory = statistics.median(pair["samples_per_s"]["memory"] for pair in pairs)
    row = ratio(
        "P2",
        "model.fit samples/s fed by split_dataset / fed by numpy arrays in memory (1 process)",
        value,
        P2_TARGET,
        (
            f"median of {len(pairs)} paired epochs; streamed {streamed:,.0f} vs in-memory {memory:,.0f} "
            f"samples/s (medians); per pair {[round(pair['ratio'], 3) for pair in pairs]}; "
            f"{args.threads} TF threads, batch {args.batch_size}, shuffle buffer {args.shuffle_buffer}, "
            f"{args.size}x{args.size}x3, {result['steps_per_epoch']} steps per epoch"
        ),
    )
    return result, row


def run_p3(root: Path, args: argparse.Namespace) -> tuple[dict, dict]:
    log.info("P3: 2 ranks x 1 thread vs 1 rank x %d threads, %d round(s)", args.threads, args.rounds)
    configs = [("one_rank", 1, args.threads, True), ("two_ranks", 2, 1, True)]
    if args.identity_baseline:
        configs.append(("two_ranks_no_allreduce", 2, 1, False))
    rounds = []
    for index in range(args.rounds):
        # Rotate which goes first, so that a drift in load hits every configuration alike.
        order = configs[index % len(configs) :] + configs[: index % len(configs)]
        launched = {
            name: _in_spawned(_launch, str(root), args, ranks, threads, allreduce)
            for name, ranks, threads, allreduce in order
        }
        log.info(
            "P3 round %d: %s samples/s; allreduce per step: wait %.1f ms, transfer %.1f ms",
            index + 1,
            ", ".join(f"{name} {launched[name][0]['samples_per_s']:.0f}" for name, *_ in configs),
            launched["two_ranks"][0]["allreduce_wait_ms_per_step"],
            launched["two_ranks"][0]["allreduce_transfer_ms_per_step"],
        )
        rounds.append(launched)

    def rate(name: str) -> float:
        return statistics.median(r[name][0]["samples_per_s"] for r in rounds)

    ratios = [r["two_ranks"][0]["samples_per_s"] / r["one_rank"][0]["samples_per_s"] for r in rounds]
    value = statistics.median(ratios)
    two, one = rate("two_ranks"), rate("one_rank")
    ranks = [result for r in rounds for result in r["two_ranks"]]
    wait = statistics.median(result["allreduce_wait_ms_per_step"] for result in ranks)
    transfer = statistics.median(result["allreduce_transfer_ms_per_step"] for result in ranks)
    step_ms = 1e3 * args.batch_size / two
    detail = (
        f"2x1 {two:,.0f} vs 1x{args.threads} {one:,.0f} samples/s (medians); per round "
        f"{[round(r, 3) for r in ratios]}; global batch {args.batch_size} (2x{args.batch_size // 2} vs "
        f"1x{args.batch_size}); per 2-rank step of {step_ms:.0f} ms, timed in the graph: grouped allreduce "
        f"{transfer:.1f} ms after {wait:.1f} ms waiting for the other rank (medians over ranks and rounds)"
    )
    if args.identity_baseline:
        alone = rate("two_ranks_no_allreduce")
        detail += (
            f"; 2x1 with the allreduce replaced by the identity {alone:,.0f} samples/s, step "
            f"{1e3 * args.batch_size / alone:.0f} ms (the allreduce costs {1 - two / alone:.1%} of it)"
        )
    row = ratio(
        "P3",
        f"Horovod 2 ranks x 1 thread / 1 rank x {args.threads} threads, samples/s, same global batch",
        value,
        P3_TARGET,
        detail,
    )
    return {"rounds": rounds}, row


def machine_info(load_before: tuple[float, float, float]) -> dict:
    import numpy as np
    import pyarrow as pa

    return {
        "load_average_1_5_15_before": list(load_before),
        "load_average_1_5_15_after": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {"numpy": np.__version__, "pyarrow": pa.__version__},
    }


def run(args: argparse.Namespace) -> dict:
    from read_throughput import write_dataset

    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        log.warning("load average is %.2f on %d CPUs: other work is running", load_before[0], os.cpu_count())
    results: dict = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlfusion-train-bench-", dir=args.tmp_dir) as tmp:
        root = Path(tmp) / "images.parquet"
        data = write_dataset(root, args.rows, args.size, args.row_group_size, 2, 0, args.compression)
        log.info("wrote %d rows in %d row groups to %s", data["rows"], data["row_groups"], root)
        if args.only in (None, "P2"):
            results["P2"], row = run_p2(root, args)
            rows.append(row)
        if args.only in (None, "P3"):
            results["P3"], row = run_p3(root, args)
            rows.append(row)
    return {
        "benchmark": "train_throughput",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(load_before),
        "checkout": checkout_info(),
        "parameters": {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        },
        "data": data,
        "ratios": rows,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pipelines.runtime.logs import setup_logging

    setup_logging()
    started = time.perf_counter()
    results = run(args)
    results["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    for row in results["ratios"]:
        print(f"{row['id']}: {row['value']:.3f} (target {row['target']}, met: {row['met']}): {row['detail']}")
    print(
        f"load average before {results['machine']['load_average_1_5_15_before']}, "
        f"after {results['machine']['load_average_1_5_15_after']}; {results['seconds']:.0f} s"
    )
    log.info("results written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
