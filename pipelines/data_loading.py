"""Data loading: a split's Parquet -> Petastorm reader -> tf.data batches for one Horovod rank.

Ranks get whole row groups (``cur_shard``/``shard_count``). Every rank runs the same number of
steps per epoch, planned once from the row-group layout, with the reader repeating, so that no
rank waits forever in an allreduce for a rank that ran out of data.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines import storage
from pipelines.errors import DataError
from pipelines.logs import quiet_library_warnings
from pipelines.transforms import Transform

# Row groups a reader may hold decoded ahead of the trainer: bounds memory per rank.
READ_AHEAD_ROW_GROUPS = 4
# TensorFlow wraps a numpy array aligned to this many bytes without copying it (EIGEN_MAX_ALIGN_BYTES);
# an unaligned one is copied once more at the tf.data boundary (measured: 4x slower per batch).
_ALIGN_BYTES = 64


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


class _ArrowTables:
    """petastorm's results-queue reader, minus its numpy conversion: ``next(reader)`` returns each
    row group as the ``pyarrow.Table`` the worker read.

    petastorm's own conversion (``Array.to_pandas``) turns a binary column into one Python ``bytes``
    object per row, which then has to be joined or handed to tf.data as strings: a copy and per-row
    work. The table's binary column is instead viewed as one numpy array (``_decode``).
    """

    batched_output = True

    def read_next(self, workers_pool, schema, ngram):
        from petastorm.workers_pool import EmptyResultError

        try:
            return workers_pool.get_results()
        except EmptyResultError:
            raise StopIteration from None


@functools.cache
def _row_group_worker() -> type:
    """petastorm's ``ArrowReaderWorker`` handing over Arrow tables (``_ArrowTables``) as read.

    The stock worker passes every table through ``take(arange(rows))`` even when it does not
    shuffle rows: a copy of every byte read (measured: a fifth of the reader's CPU time).
    """
    from petastorm.arrow_reader_worker import ArrowReaderWorker

    class RowGroupWorker(ArrowReaderWorker):
        @staticmethod
        def new_results_queue_reader():
            return _ArrowTables()

        def _read_with_shuffle_row_drop(self, piece, pq_file, column_names, shuffle_row_drop_partition):
            if self._shuffle_rows or shuffle_row_drop_partition[1] != 1 or piece.partition_keys:
                return super()._read_with_shuffle_row_drop(
                    piece, pq_file, column_names, shuffle_row_drop_partition
                )
            # The file the worker has just opened for this piece (``piece.read`` would open it again).
            columns = sorted(column_names)
            if piece.row_group is None:
                return pq_file.read(columns=columns)
            return pq_file.read_row_group(piece.row_group, columns=columns)

    return RowGroupWorker


def _open_reader(url: str, column: str, shard: int, shard_count: int, seed: int):
    """What ``petastorm.make_batch_reader`` opens, with ``_row_group_worker`` as its worker: one
    worker thread, ``READ_AHEAD_ROW_GROUPS`` row groups read ahead, row groups shuffled from
    ``seed``, repeating forever."""
    from petastorm.fs_utils import get_filesystem_and_path_or_paths
    from petastorm.reader import Reader, normalize_dataset_url_or_urls
    from petastorm.workers_pool.thread_pool import ThreadPool

    filesystem, path = get_filesystem_and_path_or_paths(normalize_dataset_url_or_urls(url))
    return Reader(
        filesystem,
        path,
        schema_fields=[column, "label"],
        worker_class=_row_group_worker(),
        reader_pool=ThreadPool(1, READ_AHEAD_ROW_GROUPS, seed=seed),
        seed=seed,
        shuffle_row_groups=True,
        num_epochs=None,
        cur_shard=shard,
        shard_count=shard_count,
        is_batched_reader=True,
    )


def _row_group_tables(
    url: str, rank: int, size: int, seed: int, passes: int | None, first_pass: int, column: str = "pixels"
) -> Iterator:
    """Yield this shard's row groups as pyarrow Tables (``column``, label), over ``passes`` passes
    (None: forever).

    Each pass opens a fresh reader whose row-group order is shuffled from (``seed``, pass): the order
    changes every epoch yet a run is reproducible, and nothing a reader holds survives its pass.
    A pass takes exactly this shard's row-group count from a never-ending reader: petastorm 0.13.1's
    thread pool can declare a ``num_epochs=1`` reader finished while row groups are still in flight
    (measured: 4 of 12 row groups lost in one pass), so its end of data is not trusted. One worker
    thread keeps results in ventilation order (with more, the pool reorders them across the cycle
    boundary) and reads Parquet while the consumer batches the previous row group.
    """
    quiet_library_warnings()
    total = len(storage.row_group_sizes(url))
    groups_in_shard = len(range(rank, total, size))
    counter = itertools.count(first_pass) if passes is None else range(first_pass, first_pass + passes)
    for index in counter:
        reader = _open_reader(url, column, rank, size, _pass_seed(seed, index))
        try:
            # Results come in ventilation order, so the first ``groups_in_shard`` results are one
            # shuffled cycle: every row group of the shard exactly once.
            for _ in range(groups_in_shard):
                yield next(reader)
        finally:  # not ``with``: its exit prints to stdout on every pass
            reader.stop()
            reader.join()


def _decode(table, column: str, dtype: np.dtype, shape: tuple[int, ...] | None, where: str) -> tuple:
    """One row group's (features, int32 labels) as numpy arrays, features of ``(rows, *shape)``
    (without ``shape``: one flat vector per row).

    The binary column's data buffer is viewed in place (``np.frombuffer``): no per-row Python and
    no copy when the row group arrives as one chunk (it does: the worker reads one row group).
    """
    parts = []
    for chunk in table.column(column).chunks:
        _, offsets_buffer, data_buffer = chunk.buffers()
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(offsets_buffer, dtype=offset_type)
        offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
        if shape is None:
            shape = (int(offsets[1] - offsets[0]) // dtype.itemsize,) if len(chunk) else (0,)
        row_bytes = int(np.prod(shape)) * dtype.itemsize
        if chunk.null_count or np.any(np.diff(offsets) != row_bytes):
            raise DataError(where, f"rows of column {column!r} are not all {row_bytes} bytes")
        data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
        parts.append(data.view(dtype).reshape(-1, *shape))
    labels = table.column("label")
    if labels.null_count:
        raise DataError(where, "null labels")
    label_parts = [chunk.to_numpy(zero_copy_only=False) for chunk in labels.chunks]
    features = parts[0] if len(parts) == 1 else np.concatenate(parts)
    label_array = label_parts[0] if len(label_parts) == 1 else np.concatenate(label_parts)
    return features, label_array.astype(np.int32, copy=False)


def _row_group_batches(
    url: str,
    rank: int,
    size: int,
    seed: int,
    passes: int | None,
    first_pass: int,
    column: str = "pixels",
    dtype: str = "uint8",
    shape: tuple[int, ...] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (features, int32 labels) numpy arrays one row group at a time (see ``_row_group_tables``).

    Features are ``(rows, *shape)`` arrays of little-endian ``dtype`` viewed on the Parquet reader's
    buffer; without ``shape``, one flat vector per row.
    """
    numpy_dtype = np.dtype(dtype).newbyteorder("<")
    for table in _row_group_tables(url, rank, size, seed, passes, first_pass, column):
        yield _decode(table, column, numpy_dtype, shape, url)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a ``_ALIGN_BYTES`` boundary (numpy's own allocations
    are only 16-byte aligned)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN_BYTES, np.uint8)
    start = -raw.ctypes.data % _ALIGN_BYTES
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _gather(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` into a new aligned array."""
    out = _aligned_empty((len(rows), *array.shape[1:]), array.dtype)
    return np.take(array, rows, axis=0, out=out)


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts)`` into a new aligned array."""
    rows = sum(len(part) for part in parts)
    return np.concatenate(parts, out=_aligned_empty((rows, *parts[0].shape[1:]), parts[0].dtype))


class _ShuffleBuffer:
    """A shuffle buffer of at least ``capacity`` rows that exchanges whole batches: tf.data's
    ``shuffle`` done a batch at a time.

    As in tf.data, each incoming row takes the slot of a row drawn at random from the buffer, and
    the drawn row goes out, so a row stays for ``capacity`` rows on average; here a block of up to
    ``block_rows`` rows is exchanged at once (one gather, one scatter). The buffer fills with whole
    blocks (up to ``capacity + block_rows - 1`` rows) so that every block out has the size of the
    block in. It is allocated once: memory stays flat.
    """

    def __init__(self, capacity: int, block_rows: int, rng: np.random.Generator):
        self.capacity, self.block_rows, self.rng = capacity, block_rows, rng
        self.features: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.filled = 0

    def exchange(self, features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Take a block of at most ``block_rows`` rows in; return as many rows drawn at random
        (None while the buffer is still filling)."""
        rows = len(labels)
        if self.features is None:
            slots = self.capacity + self.block_rows
            self.features = np.empty((slots, *features.shape[1:]), features.dtype)
            self.labels = np.empty((slots,), labels.dtype)
        if self.filled < self.capacity:
            self.features[self.filled : self.filled + rows] = features
            self.labels[self.filled : self.filled + rows] = labels
            self.filled += rows
            return None
        slots = self.rng.choice(self.filled, rows, replace=False)
        leaving = _gather(self.features, slots), _gather(self.labels, slots)
        self.features[slots] = features
        self.labels[slots] = labels
        return leaving

    def drain(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield what the buffer still holds, in random order, and empty it."""
        if self.filled:
            order = self.rng.permutation(self.filled)
            self.filled = 0
            yield _gather(self.features, order), _gather(self.labels, order)


def _shuffled(
    blocks: Iterator[tuple[np.ndarray, np.ndarray]], buffer: _ShuffleBuffer
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``blocks`` passed through ``buffer``, then what it still holds once they end."""
    for features, labels in blocks:
        leaving = buffer.exchange(features, labels)
        if leaving is not None:
            yield leaving
    yield from buffer.drain()


def _rebatch(
    blocks: Iterator[tuple[np.ndarray, np.ndarray]], batch_size: int, drop_remainder: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cut a stream of (features, labels) blocks into batches of ``batch_size`` rows.

    Batches inside a block are views (no copy); only a batch that spans two blocks is concatenated.
    Batches are 64-byte aligned when the blocks and the row size are (Arrow's buffers are), so
    that tf.data takes them without a copy.
    """
    held_features: list[np.ndarray] = []
    held_labels: list[np.ndarray] = []
    held = 0
    for features, labels in blocks:
        start, rows = 0, len(labels)
        if held:
            start = min(batch_size - held, rows)
            held_features.append(features[:start])
            held_labels.append(labels[:start])
            held += start
            if held < batch_size:
                continue
            yield _concatenate(held_features), _concatenate(held_labels)
            held_features, held_labels, held = [], [], 0
        while start + batch_size <= rows:
            yield features[start : start + batch_size], labels[start : start + batch_size]
            start += batch_size
        if start < rows:
            held_features, held_labels, held = [features[start:]], [labels[start:]], rows - start
    if held and not drop_remainder:
        yield _concatenate(held_features), _concatenate(held_labels)


def _batch_stream(
    url: str,
    transform: Transform,
    *,
    batch_size: int,
    rank: int,
    size: int,
    seed: int,
    shuffle_buffer: int,
    passes: int | None,
    first_pass: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches ``split_dataset`` hands to tf.data, as numpy arrays: read, decode, shuffle, batch.

    Rows are shuffled by a ``shuffle_buffer``-row buffer seeded from (``seed``, ``rank``,
    ``first_pass``); with ``passes`` set the last batch may be short, otherwise all are full.
    """
    groups = _row_group_batches(
        url,
        rank,
        size,
        seed,
        passes,
        first_pass,
        transform.feature_column,
        transform.feature_dtype,
        tuple(transform.feature_shape),
    )
    blocks = groups
    if shuffle_buffer:
        # Batch first (views, except where a batch spans two row groups), then exchange whole
        # batches with the buffer: what leaves is already batch-sized, so the last ``_rebatch``
        # passes it through without copying.
        rng = np.random.default_rng([seed & 0xFFFFFFFF, rank, first_pass])
        buffer = _ShuffleBuffer(shuffle_buffer, batch_size, rng)
        blocks = _shuffled(_rebatch(groups, batch_size, drop_remainder=False), buffer)
    return _rebatch(blocks, batch_size, drop_remainder=passes is None)


def _pass_seed(seed: int, index: int) -> int:
    """A distinct non-zero seed per pass (petastorm treats seed 0 as "not seeded")."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, index]).generate_state(1)[0]) or 1


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
):
    """A tf.data pipeline of (features, int32 labels) batches of this rank's shard.

    Features are the transform's ``feature_column`` (raw bytes in Parquet) as ``feature_dtype``
    arrays of ``feature_shape``: uint8 images, or int32 token ids.

    With ``repeat`` the data never ends (the caller sets steps per epoch) and every batch is full;
    without it, each iteration is one pass over the shard (for validation), the last batch possibly
    short. Decoding, shuffling and batching happen in numpy on whole row groups (``_batch_stream``):
    tf.data receives ready batches and only prefetches them. Per-element tf.data work
    (``unbatch``/``shuffle``/``batch``) after ``from_generator`` cost half the read throughput.
    """
    import tensorflow as tf

    url = Path(str(location).removeprefix("file:")).resolve().as_uri()
    passes = None if repeat else 1
    dtype, shape = tf.as_dtype(transform.feature_dtype), tuple(transform.feature_shape)

    def generate():
        return _batch_stream(
            url,
            transform,
            batch_size=batch_size,
            rank=rank,
            size=size,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            passes=passes,
            first_pass=first_pass,
        )

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((batch_size if repeat else None, *shape), dtype),
            tf.TensorSpec((batch_size if repeat else None,), tf.int32),
        ),
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
