"""Data loading: a split's Parquet -> Petastorm reader -> tf.data batches for one Horovod rank.

Ranks get whole row groups (``cur_shard``/``shard_count``). Every rank runs the same number of
steps per epoch, planned once from the row-group layout, with the reader repeating, so that no
rank waits forever in an allreduce for a rank that ran out of data.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines import storage
from pipelines.errors import DataError
from pipelines.logs import quiet_library_warnings
from pipelines.transforms import Transform

# Row groups a reader may hold decoded ahead of the trainer, and ready batches after it: together
# they bound a rank's loader memory.
READ_AHEAD_ROW_GROUPS = 4
READ_AHEAD_BATCHES = 4
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
    sizes = storage.row_group_sizes(location)
    if len(sizes) < num_proc:
        raise DataError(
            str(location),
            f"has {len(sizes)} row group(s) for train.num_proc={num_proc} ranks, so a rank would "
            "get no data: lower preprocess.rows_per_row_group or train.num_proc",
        )
    return ShardPlan(sum(sizes), len(sizes), num_proc, batch_size)


def _row_group_batches(
    url: str, rank: int, size: int, seed: int, passes: int | None, first_pass: int, column: str = "pixels"
) -> Iterator[tuple]:
    """Yield (``column``, label) arrays one row group at a time, over ``passes`` passes (None: forever).

    Each pass opens a fresh reader whose row-group order is shuffled from (``seed``, pass): the order
    changes every epoch yet a run is reproducible, and nothing a reader holds survives its pass.
    A pass takes exactly this shard's row-group count from a never-ending reader: petastorm 0.13.1's
    thread pool can declare a ``num_epochs=1`` reader finished while row groups are still in flight
    (measured: 4 of 12 row groups lost in one pass), so its end of data is not trusted. One worker
    thread keeps results in ventilation order (with more, the pool reorders them across the cycle
    boundary); decoding happens later, in tf.data, so the reader thread only reads Parquet.
    """
    from petastorm import make_batch_reader

    quiet_library_warnings()
    total = len(storage.row_group_sizes(url))
    groups_in_shard = len(range(rank, total, size))
    counter = itertools.count(first_pass) if passes is None else range(first_pass, first_pass + passes)
    for index in counter:
        reader = make_batch_reader(
            url,
            schema_fields=[column, "label"],
            cur_shard=rank,
            shard_count=size,
            shuffle_row_groups=True,
            seed=_pass_seed(seed, index),
            num_epochs=None,
            workers_count=1,
            results_queue_size=READ_AHEAD_ROW_GROUPS,
        )
        try:
            # Results come in ventilation order, so the first ``groups_in_shard`` results are one
            # shuffled cycle: every row group of the shard exactly once.
            for _ in range(groups_in_shard):
                batch = next(reader)
                yield getattr(batch, column), batch.label
        finally:  # not ``with``: its exit prints to stdout on every pass
            reader.stop()
            reader.join()


def _pass_seed(seed: int, index: int) -> int:
    """A distinct non-zero seed per pass (petastorm treats seed 0 as "not seeded")."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, index]).generate_state(1)[0]) or 1


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


def _flat_rows(raw: Sequence[bytes], row_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A row group's per-row byte strings as one array of rows (one copy, into aligned memory)."""
    rows = _aligned_empty(len(raw), row_shape, dtype)
    flat = rows.reshape(-1).view(np.uint8)
    row_bytes = flat.size // max(len(raw), 1)
    for index, value in enumerate(raw):
        if len(value) != row_bytes:
            raise DataError("loader", f"a row has {len(value)} bytes of features, expected {row_bytes}")
        flat[index * row_bytes : (index + 1) * row_bytes] = np.frombuffer(value, np.uint8)
    return rows


def batches(
    row_groups: Iterable[tuple[np.ndarray, np.ndarray]],
    batch_size: int,
    *,
    shuffle_rows: int = 0,
    seed: int = 0,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cut a stream of (features, labels) row groups into batches of ``batch_size`` rows.

    With ``shuffle_rows``, rows are shuffled within windows of whole row groups holding at least
    that many rows (one gather per window, seeded): with the row-group order shuffled every pass,
    that mixes rows across row groups at memory speed, where a per-row shuffle buffer in tf.data
    costs a Python-level step per row. Batches are views of the window (no copy); only the rows
    left over at a window's end are copied into the next. Without ``drop_remainder`` the last,
    smaller batch is kept.
    """
    rng = np.random.default_rng(seed)
    window_rows = max(shuffle_rows, 1)
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    held = 0

    def cut(last: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        nonlocal pending, held
        features = pending[0][0] if len(pending) == 1 else np.concatenate([f for f, _ in pending])
        labels = pending[0][1] if len(pending) == 1 else np.concatenate([lab for _, lab in pending])
        if shuffle_rows:
            order = rng.permutation(len(labels))
            shuffled = _aligned_empty(len(labels), features.shape[1:], features.dtype)
            np.take(features, order, axis=0, out=shuffled)
            features, labels = shuffled, labels[order]
        whole = len(labels) - len(labels) % batch_size
        for start in range(0, whole, batch_size):
            yield features[start : start + batch_size], labels[start : start + batch_size]
        rest = (features[whole:], labels[whole:])
        if last and not drop_remainder and len(rest[1]):
            yield rest
        pending, held = ([rest] if len(rest[1]) else []), len(rest[1])

    for features, labels in row_groups:
        pending.append((features, labels))
        held += len(labels)
        if held >= window_rows and held >= batch_size:
            yield from cut(last=False)
    if held:
        yield from cut(last=True)


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
        while thread.is_alive():  # let a producer blocked on a full queue see the stop
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
    stall: InputStall | None = None,
):
    """A tf.data pipeline of (features, int labels) batches of this rank's shard.

    Features are the transform's ``feature_column`` (raw bytes in Parquet) as ``feature_dtype``
    arrays of ``feature_shape``: uint8 images, or int32 token ids.

    With ``repeat`` the data never ends (the caller sets steps per epoch); without it, each
    iteration is one pass over the shard (for validation). The Petastorm reader reads row groups;
    a background thread turns each into one array (one copy), shuffles rows within windows of
    ``shuffle_buffer`` rows and cuts batches, a few ahead; tf.data receives whole, ready batches
    and wraps them without a copy. Time the consumer waits for a batch goes to ``stall``.
    """
    import tensorflow as tf

    # Petastorm takes URLs: file:///abs/path for local data sets, other file systems' URIs as they are.
    url = str(location) if storage.is_uri(location) else storage.location(location).as_uri()
    passes = None if repeat else 1
    dtype, shape = np.dtype(transform.feature_dtype).newbyteorder("<"), tuple(transform.feature_shape)
    native = dtype.newbyteorder("=")

    def generate():
        row_groups = (
            (_flat_rows(raw, shape, dtype).view(native), np.asarray(labels, np.int32))
            for raw, labels in _row_group_batches(
                url, rank, size, seed, passes, first_pass, transform.feature_column
            )
        )
        ready = batches(
            row_groups, batch_size, shuffle_rows=shuffle_buffer, seed=_pass_seed(seed + rank, first_pass),
            drop_remainder=repeat,
        )  # fmt: skip
        yield from _read_ahead(ready, READ_AHEAD_BATCHES, stall)

    batch = batch_size if repeat else None
    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((batch, *shape), tf.as_dtype(native)),
            tf.TensorSpec((batch,), tf.int32),
        ),
    )
    return dataset.prefetch(2)
