"""Data loading: a split's Parquet -> Petastorm reader -> tf.data batches for one Horovod rank.

Ranks get whole row groups (``cur_shard``/``shard_count``). Every rank runs the same number of
steps per epoch, planned once from the row-group layout, with the reader repeating, so that no
rank waits forever in an allreduce for a rank that ran out of data.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines import storage
from pipelines.errors import DataError
from pipelines.logs import quiet_library_warnings
from pipelines.transforms import Transform

# Row groups a reader may hold decoded ahead of the trainer: bounds memory per rank.
READ_AHEAD_ROW_GROUPS = 4


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
    import numpy as np

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
    """A tf.data pipeline of (features, int labels) batches of this rank's shard.

    Features are the transform's ``feature_column`` (raw bytes in Parquet) as ``feature_dtype``
    arrays of ``feature_shape``: uint8 images, or int32 token ids.

    With ``repeat`` the data never ends (the caller sets steps per epoch); without it, each
    iteration is one pass over the shard (for validation). Decoding is one copy per row group,
    not per row.
    """
    import numpy as np
    import tensorflow as tf

    # Petastorm takes URLs: file:///abs/path for local data sets, other file systems' URIs as they are.
    url = str(location) if storage.is_uri(location) else storage.location(location).as_uri()
    passes = None if repeat else 1
    dtype, shape = np.dtype(transform.feature_dtype).newbyteorder("<"), transform.feature_shape

    def generate():
        # One copy per row group into a flat array: tf.data takes it whole, where a tensor of
        # per-row byte strings cost a conversion per row and a decode after it.
        rows = _row_group_batches(url, rank, size, seed, passes, first_pass, transform.feature_column)
        for raw, labels in rows:
            yield np.frombuffer(b"".join(raw), dtype), labels

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None,), tf.as_dtype(dtype.newbyteorder("="))),
            tf.TensorSpec((None,), tf.int32),
        ),
    )
    dataset = dataset.map(lambda values, labels: (tf.reshape(values, (-1, *shape)), labels))
    if shuffle_buffer:
        dataset = (
            dataset.unbatch()
            .shuffle(shuffle_buffer, seed=seed + rank)
            .batch(batch_size, drop_remainder=repeat)
        )
    else:  # whole row groups cut into batches, without going row by row
        dataset = dataset.rebatch(batch_size, drop_remainder=repeat)
    return dataset.prefetch(tf.data.AUTOTUNE)
