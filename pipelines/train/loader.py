"""Data loading: a split's Parquet -> Petastorm reader -> tf.data batches for one Horovod rank.

Ranks get whole row groups (``cur_shard``/``shard_count``). Every rank runs the same number of
steps per epoch, planned once from the row-group layout, with the reader repeating, so that no
rank waits forever in an allreduce for a rank that ran out of data.
"""

from __future__ import annotations

import atexit
import itertools
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.core import locations
from pipelines.core.errors import DataError
from pipelines.io import parquet
from pipelines.preprocess.transforms import Transform, class_indices
from pipelines.runtime.logs import quiet_library_warnings

# Row groups a reader may hold decoded ahead of the trainer, and ready batches after it: together
# they bound a rank's loader memory.
READ_AHEAD_ROW_GROUPS = 4
READ_AHEAD_BATCHES = 4
# What a loader's data error says inside TensorFlow's error, which wraps it in a trace of its own.
LOADER_ERROR = "dlfusion loader: "
# TensorFlow's CPU kernels want 64-byte aligned buffers (EIGEN_MAX_ALIGN_BYTES).
_ALIGNMENT = 64


@dataclass(frozen=True)
class ShardPlan:
    """How a split divides over ``num_proc`` ranks."""

    rows: int
    row_groups: int
    num_proc: int
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        """Steps every rank runs per epoch: one pass over the split across all ranks."""
        return max(1, self.rows // (self.num_proc * self.batch_size))


def plan_shards(location: str | Path, num_proc: int, batch_size: int) -> ShardPlan:
    """Check that every rank gets data and plan the steps per epoch.

    Raises:
        DataError: when the split has fewer row groups than ranks (a rank would get nothing).
    """
    sizes = parquet.row_group_sizes(location)
    if len(sizes) < num_proc:
        raise DataError(
            str(location),
            f"has {len(sizes)} row group(s) for train.num_proc={num_proc} ranks, so a rank would "
            "get no data: lower preprocess.rows_per_row_group or train.num_proc",
        )
    return ShardPlan(sum(sizes), len(sizes), num_proc, batch_size)


def _row_group_batches(
    url: str,
    rank: int,
    size: int,
    seed: int,
    passes: int | None,
    first_pass: int,
    column: str = "pixels",
    readers: int = 1,
) -> Iterator[tuple]:
    """Yield (``column``, label) arrays one row group at a time, over ``passes`` passes (None: forever).

    Each pass opens fresh readers whose row-group order is shuffled from (``seed``, pass): the order
    changes every epoch yet a run is reproducible, and nothing a reader holds survives its pass.
    A pass takes exactly each reader's row-group count from a never-ending reader: petastorm 0.13.1's
    thread pool can declare a ``num_epochs=1`` reader finished while row groups are still in flight
    (measured: 4 of 12 row groups lost in one pass), so its end of data is not trusted. One worker
    thread per reader keeps its results in ventilation order (with more, the pool reorders them
    across the cycle boundary).

    ``readers`` > 1 reads in parallel: reader ``w`` takes shard ``rank + size * w`` of
    ``size * readers``; petastorm shards by row-group index modulo the shard count, so together they
    hold exactly this rank's row groups. Their results are taken in turn.
    """
    from petastorm import make_batch_reader

    quiet_library_warnings()
    total = len(parquet.row_group_sizes(url))
    readers = max(1, min(readers, len(range(rank, total, size)), total // size))
    shards = [(rank + size * worker, size * readers) for worker in range(readers)]
    counter = itertools.count(first_pass) if passes is None else range(first_pass, first_pass + passes)
    for index in counter:
        opened = [
            make_batch_reader(
                url,
                # Anchored: the splits may hold more columns (``pixels_hash``), which petastorm's
                # old prefix match would also take, and warn about.
                schema_fields=[f"{re.escape(column)}$", "label$"],
                cur_shard=shard,
                shard_count=count,
                shuffle_row_groups=True,
                seed=_pass_seed(seed, index, worker),
                num_epochs=None,
                workers_count=1,
                results_queue_size=READ_AHEAD_ROW_GROUPS,
            )
            for worker, (shard, count) in enumerate(shards)
        ]
        try:
            # Results come in ventilation order, so each reader's first results, as many as its
            # shard has row groups, are one shuffled cycle: each row group exactly once. A reader
            # is stopped as soon as its last one is in hand: it would go on reading the next cycle.
            left = [len(range(shard, total, count)) for shard, count in shards]
            turns = [[worker] * count for worker, count in enumerate(left)]
            for worker in (w for turn in itertools.zip_longest(*turns) for w in turn if w is not None):
                batch = next(opened[worker])
                left[worker] -= 1
                if not left[worker]:
                    opened[worker].stop()
                yield getattr(batch, column), batch.label
        finally:  # not ``with``: its exit prints to stdout on every pass
            for reader in opened:
                reader.stop()
            for reader in opened:
                reader.join()


def _pass_seed(seed: int, index: int, worker: int = 0) -> int:
    """A distinct non-zero seed per pass and reader (petastorm treats seed 0 as "not seeded")."""
    entropy = [seed & 0xFFFFFFFF, index, *([worker] if worker else [])]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0]) or 1


class InputStall:
    """Seconds the consumer of a loader waited for its next batch, since the last ``take``.

    Timed where the loader hands a ready batch to tf.data: when the reader keeps ahead, the
    hand-over finds a batch waiting and costs nothing; when it does not, the time spent there is
    time the training step waits (tf.data's own prefetch buffer is empty by then).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waited = 0.0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._waited += seconds

    def take(self) -> float:
        """The seconds waited since the last call (and start counting again)."""
        with self._lock:
            waited, self._waited = self._waited, 0.0
        return waited


def _aligned_empty(rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary: TensorFlow wraps such a
    buffer without copying it (it copies any array less aligned than its kernels require)."""
    nbytes = rows * int(np.prod(row_shape)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape((rows, *row_shape))


class BatchBuffers:
    """Aligned batch arrays (``_aligned_empty``), each reused once nothing outside holds it.

    A batch handed to TensorFlow stays referenced (through its DLPack capsule) until TensorFlow
    frees the tensor, so an array only this pool refers to is free to fill again. Reuse spares a
    fresh allocation of tens of MB per batch (allocated in one thread, freed in another) and its
    page faults; it did not stop the resident size drifting up over the first passes (measured at
    224x224: benchmarks/README.md). At most ``limit`` arrays are kept; past that, batches get
    fresh arrays.
    """

    def __init__(self, limit: int = 16):
        self.limit = limit
        self._arrays: list[np.ndarray] = []

    def take(self, rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        shape = (rows, *row_shape)
        for array in self._arrays:
            if array.shape == shape and array.dtype == dtype and self._unused(array):
                return array
        array = _aligned_empty(rows, row_shape, dtype)
        if len(self._arrays) < self.limit:
            self._arrays.append(array)
        return array

    @staticmethod
    def _unused(array: np.ndarray) -> bool:
        """Whether only the pool refers to ``array`` and its memory. numpy points every view of a
        view at the array that owns the memory, so a view that TensorFlow holds shows up on the
        owner (``array.base``), not on ``array``."""
        # References to the array: the pool's list, the caller's loop variable, the parameter and
        # getrefcount's argument; to its owner: the array's ``base`` and getrefcount's argument.
        return sys.getrefcount(array) == 4 and sys.getrefcount(array.base) == 2


def batches(
    row_groups: Iterable[tuple[Sequence[bytes], np.ndarray]],
    batch_size: int,
    row_shape: tuple[int, ...],
    dtype: np.dtype,
    *,
    shuffle_rows: int = 0,
    seed: int = 0,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Turn a stream of row groups, (per-row byte strings, labels), into (features, labels) batches
    of ``batch_size`` rows, features as ``dtype`` arrays of ``row_shape`` per row.

    Each row's bytes are copied once, straight into its batch (64-byte aligned, so that TensorFlow
    can take the batch without another copy). With ``shuffle_rows``, rows are shuffled within
    windows of whole row groups holding at least that many rows, seeded: with the row-group order
    shuffled every pass, that mixes rows across row groups for the cost of permuting references,
    where a shuffle buffer in tf.data costs a step per row. Without ``drop_remainder`` the last,
    smaller batch is kept.

    Raises:
        DataError: when a row does not hold exactly one ``row_shape`` of ``dtype``.
    """
    rng = np.random.default_rng(seed)
    buffers = BatchBuffers()
    row_bytes = int(np.prod(row_shape)) * dtype.itemsize
    window: list[bytes] = []
    window_labels: list[np.ndarray] = []
    held = 0

    def cut(count: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        nonlocal window, window_labels, held
        labels = np.concatenate(window_labels) if len(window_labels) > 1 else window_labels[0]
        order = rng.permutation(held) if shuffle_rows else np.arange(held)
        for start in range(0, count, batch_size):
            rows = order[start : start + batch_size]
            features = buffers.take(len(rows), row_shape, dtype)
            flat = features.reshape(len(rows), -1).view(np.uint8)
            for slot, row in enumerate(rows):
                value = window[row]
                if len(value) != row_bytes:
                    raise DataError("loader", f"a row holds {len(value)} bytes of features, not {row_bytes}")
                flat[slot] = np.frombuffer(value, np.uint8)
            yield features, labels[rows]
        rest = order[count:]
        window, window_labels, held = [window[row] for row in rest], [labels[rest]], len(rest)

    for raw, labels in row_groups:
        window.extend(raw)
        window_labels.append(np.asarray(labels))
        held += len(raw)
        if held >= max(shuffle_rows, batch_size):
            yield from cut(held - held % batch_size)
    if held and not drop_remainder:
        yield from cut(held)


def _read_ahead(source: Iterator, depth: int, stall: InputStall | None) -> Iterator:
    """``source`` produced by a background thread, up to ``depth`` items ahead of the consumer; the
    time the consumer waits for an item goes to ``stall``. The thread stops when the consumer
    stops iterating (closes this generator), and its error is raised in the consumer."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((done, None))
        except BaseException as err:  # handed to the consumer, which raises it
            ready.put((done, err))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="dlfusion-loader", daemon=True)
    thread.start()
    try:
        while True:
            started = time.perf_counter()
            item, error = ready.get()
            if stall is not None:
                stall.add(time.perf_counter() - started)
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        # Empty the queue until a producer blocked on a full one has seen the stop. Garbage
        # collection may close this generator on any thread, the producer's own included.
        while thread.is_alive() and thread is not threading.current_thread():
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def split_dataset(
    location: str | Path,
    transform: Transform,
    *,
    batch_size: int,
    rank: int,
    size: int,
    seed: int,
    shuffle_buffer: int = 0,
    repeat: bool = True,
    first_pass: int = 0,
    readers: int = 1,
    stall: InputStall | None = None,
):
    """A tf.data pipeline of (features, int labels) batches of this rank's shard.

    Features are the transform's ``feature_column`` (raw bytes in Parquet) as ``feature_dtype``
    arrays of ``feature_shape``: uint8 images, or int32 token ids.

    With ``repeat`` the data never ends (the caller sets steps per epoch); without it, each
    iteration is one pass over the shard (for validation). The Petastorm reader reads row groups;
    a background thread copies each row once into its batch (``batches``: rows shuffled within
    windows of at least ``shuffle_buffer`` rows), a few batches ahead; tf.data receives whole,
    ready batches without a copy (``_hand_over``). ``readers`` Petastorm readers read this shard's
    row groups in parallel. Time the consumer waits for a batch goes to ``stall``.
    """
    import tensorflow as tf

    # Petastorm takes URLs: file:///abs/path for local data sets, other file systems' URIs as they are.
    url = str(location) if locations.is_uri(location) else locations.location(location).as_uri()
    passes = None if repeat else 1
    dtype, shape = np.dtype(transform.feature_dtype).newbyteorder("<"), tuple(transform.feature_shape)
    native = dtype.newbyteorder("=")

    def feed() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        row_groups = _row_group_batches(
            url, rank, size, seed, passes, first_pass, transform.feature_column, readers
        )
        ready = batches(
            row_groups, batch_size, shape, dtype, shuffle_rows=shuffle_buffer,
            seed=_pass_seed(seed + rank, first_pass), drop_remainder=repeat,
        )  # fmt: skip
        indexed = ((f.view(native), class_indices(labels, transform.class_names)) for f, labels in ready)
        return _read_ahead(indexed, READ_AHEAD_BATCHES, stall)

    return _hand_over(feed, (batch_size if repeat else None, *shape), tf.as_dtype(native), str(location))


# Python iterators of the live iterations of loader data sets, by id (``_hand_over``).
_FEEDS: dict[int, Iterator] = {}
_FEED_IDS = itertools.count()


@atexit.register
def close_feeds() -> None:
    """Close every feed still open (a training's never-ending one, those of a rank that failed):
    that stops its thread and its Petastorm readers. Called when a rank's training job ends (a rank
    kept for later jobs would otherwise keep them, polling), and at exit, while threads still run: a
    feed left to the interpreter's final clean-up would wait there forever for threads that no
    longer do."""
    while _FEEDS:
        _, feed = _FEEDS.popitem()
        try:
            feed.close()
        except ValueError:  # running in another thread right now: its daemon thread ends with us
            pass


def _hand_over(feed: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], shape: tuple, dtype, where: str):
    """A tf.data set of the (features, labels) batches that ``feed()`` yields, one fresh ``feed()``
    per iteration of the data set; a ``DataError`` of the feed names ``where``.

    ``tf.data.Dataset.from_generator`` copies every array it is handed (measured: 0.37 GB/s out of
    a 0.99 GB/s feed at 224x224); here each batch crosses as a DLPack tensor that shares the
    array's memory, so the hand-over copies nothing.
    """
    import tensorflow as tf

    def start() -> np.int64:
        key = next(_FEED_IDS)
        _FEEDS[key] = feed()
        return np.int64(key)

    def next_batch(key):
        key = int(key.numpy())
        try:
            features, labels = next(_FEEDS[key])
        except StopIteration:
            del _FEEDS[key]
            return tf.zeros((0, *shape[1:]), dtype), tf.zeros((0,), tf.int32)
        except DataError as err:  # marked, so that the rank's report can find it in TensorFlow's
            raise tf.errors.InvalidArgumentError(None, None, f"{LOADER_ERROR}{where}: {err.problem}") from err
        return tf.experimental.dlpack.from_dlpack(features.__dlpack__()), tf.constant(labels)

    def batches_of(key):
        pulled = tf.data.Dataset.from_tensors(key).repeat()
        pulled = pulled.map(lambda key: tf.py_function(next_batch, [key], (dtype, tf.int32)))
        pulled = pulled.take_while(lambda _, labels: tf.shape(labels)[0] > 0)
        return pulled.map(
            lambda features, labels: (tf.ensure_shape(features, shape), tf.ensure_shape(labels, shape[:1]))
        )

    iteration = tf.data.Dataset.from_tensors(0).map(lambda _: tf.numpy_function(start, [], tf.int64))
    # Nothing here is autotuned, and destroying an iterator waits up to 0.6 s for the autotuner's
    # thread (measured: every other validation pass ended that much late).
    options = tf.data.Options()
    options.autotune.enabled = False
    return iteration.flat_map(batches_of).prefetch(2).with_options(options)
