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
from pipelines.transforms import ImageTransform

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
    url: str, rank: int, size: int, seed: int, passes: int | None, first_pass: int, workers: int
) -> Iterator[tuple]:
    """Yield (pixels, label) arrays one row group at a time, over ``passes`` passes (None: forever).

    Each pass opens a fresh reader whose row-group order is shuffled with ``seed + pass``: the order
    changes every epoch yet a run is reproducible, and nothing a reader holds survives its pass.
    """
    from petastorm import make_batch_reader

    quiet_library_warnings()
    counter = itertools.count(first_pass) if passes is None else range(first_pass, first_pass + passes)
    for index in counter:
        reader = make_batch_reader(
            url,
            schema_fields=["pixels", "label"],
            cur_shard=rank,
            shard_count=size,
            shuffle_row_groups=True,
            seed=seed + index,
            num_epochs=1,
            workers_count=workers,
            results_queue_size=READ_AHEAD_ROW_GROUPS,
        )
        try:
            for batch in reader:
                yield batch.pixels, batch.label
        finally:  # not ``with``: its exit prints to stdout on every pass
            reader.stop()
            reader.join()


def image_dataset(
    location: str | Path,
    transform: ImageTransform,
    *,
    batch_size: int,
    rank: int,
    size: int,
    seed: int,
    shuffle_buffer: int = 0,
    repeat: bool = True,
    first_pass: int = 0,
    workers: int = 2,
):
    """A tf.data pipeline of (uint8 images, int labels) batches of this rank's shard.

    With ``repeat`` the data never ends (the caller sets steps per epoch); without it, each
    iteration is one pass over the shard (for validation). Decoding is one vectorized op per
    row group, not per row.
    """
    import tensorflow as tf

    url = Path(str(location).removeprefix("file:")).resolve().as_uri()
    passes = None if repeat else 1
    height, width, channels = transform.shape

    def generate():
        return _row_group_batches(url, rank, size, seed, passes, first_pass, workers)

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None,), tf.string),
            tf.TensorSpec((None,), tf.int32),
        ),
    )

    def decode(pixels, labels):
        images = tf.reshape(tf.io.decode_raw(pixels, tf.uint8), (-1, height, width, channels))
        return images, labels

    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed + rank)
    return dataset.batch(batch_size, drop_remainder=repeat).prefetch(tf.data.AUTOTUNE)
