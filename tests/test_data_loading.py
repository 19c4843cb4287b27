"""Data loading: shard planning, Petastorm -> tf.data batches, per-epoch reshuffle from a seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import storage
from pipelines.catalog import Catalog
from pipelines.data_loading import (
    ShardPlan,
    _rebatch,
    _row_group_batches,
    _row_group_tables,
    plan_shards,
    split_dataset,
)
from pipelines.errors import DataError
from pipelines.transforms import load_transform


def test_fewer_row_groups_than_ranks_fails_at_planning(tmp_path):
    folder = tmp_path / "one_group.parquet"
    folder.mkdir()
    table = pa.table({"relpath": ["a"], "label": pa.array([0], pa.int32()), "pixels": [b"\0" * 12]})
    pq.write_table(table, folder / "part-0.parquet")
    with pytest.raises(DataError, match="1 row group.*train.num_proc=2"):
        plan_shards(folder, num_proc=2, batch_size=1)
    assert plan_shards(folder, num_proc=1, batch_size=1).steps_per_epoch == 1


def test_steps_per_epoch_is_one_pass_split_over_ranks():
    assert ShardPlan(rows=1000, row_groups=10, num_proc=2, batch_size=32).steps_per_epoch == 15
    assert ShardPlan(rows=10, row_groups=2, num_proc=2, batch_size=32).steps_per_epoch == 1


def test_two_shards_cover_every_row_once(digits_workdir):
    catalog = Catalog.for_workdir(digits_workdir)
    transform = load_transform(catalog.transform)
    labels: Counter = Counter()
    rows_of_rank: dict[int, int] = {}
    for rank in (0, 1):
        dataset = split_dataset(
            catalog.split("val"), transform, batch_size=16, rank=rank, size=2, seed=1, repeat=False
        )
        for images, batch_labels in dataset:
            assert images.dtype.name == "uint8" and tuple(images.shape[1:]) == transform.shape
            labels.update(batch_labels.numpy().tolist())
            rows_of_rank[rank] = rows_of_rank.get(rank, 0) + int(batch_labels.shape[0])
    table = pq.read_table(str(catalog.split("val")))
    assert labels == Counter(table.column("label").to_pylist())
    # And a second iteration of the same data set is a fresh full pass (what validation needs).
    assert sum(int(labels.shape[0]) for _, labels in dataset) == rows_of_rank[1] > 0


def test_repeating_dataset_never_runs_dry_and_batches_are_full(digits_workdir):
    catalog = Catalog.for_workdir(digits_workdir)
    transform = load_transform(catalog.transform)
    rows = sum(storage.row_group_sizes(catalog.split("val")))
    dataset = split_dataset(catalog.split("val"), transform, batch_size=32, rank=0, size=2, seed=0)
    batches = list(dataset.take(3 * rows // 32 + 5))  # more than several passes over the shard
    assert all(int(images.shape[0]) == 32 for images, _ in batches)


def test_row_group_order_changes_every_pass_and_is_reproducible(digits_workdir):
    url = Catalog.for_workdir(digits_workdir).split("train").as_uri()

    def pass_orders(seed: int) -> list[list[int]]:
        orders: list[list[int]] = []
        groups = len(storage.row_group_sizes(Catalog.for_workdir(digits_workdir).split("train")))
        batches = list(_row_group_batches(url, 0, 1, seed, passes=3, first_pass=0))
        for index in range(3):
            chunk = batches[index * groups : (index + 1) * groups]
            orders.append([int(np.asarray(labels)[:8].sum()) + 1000 * len(labels) for _, labels in chunk])
        return orders

    first, again = pass_orders(7), pass_orders(7)
    assert first == again  # same seed, same order: a run is reproducible
    assert first[0] != first[1] != first[2]  # yet each pass is shuffled anew
    assert sorted(first[0]) == sorted(first[1])  # the same row groups each pass


# ------------------------------------------------------------------ numpy batching, shuffle, readers

PIXEL_SHAPE = (2, 2, 3)


def _numbered_split(folder, group_sizes: list[int]):
    """A split whose label is the row number and whose pixels all equal the row number mod 251,
    so that a batch shows which rows it holds and that features stay with their labels."""
    folder.mkdir()
    row_bytes = int(np.prod(PIXEL_SHAPE))
    schema = pa.schema([("pixels", pa.binary()), ("label", pa.int32())])
    start = 0
    with pq.ParquetWriter(folder / "part-00000.parquet", schema) as writer:
        for count in group_sizes:
            ids = np.arange(start, start + count)
            pixels = [bytes([i % 251]) * row_bytes for i in ids]
            table = pa.table({"pixels": pixels, "label": pa.array(ids, pa.int32())}, schema=schema)
            writer.write_table(table, row_group_size=count)
            start += count
    return folder, start


class _Rows:
    """The transform attributes split_dataset uses."""

    feature_column, feature_dtype, feature_shape = "pixels", "uint8", PIXEL_SHAPE


def _one_pass(folder, **kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
    dataset = split_dataset(folder, _Rows(), rank=0, size=1, seed=3, repeat=False, **kwargs)
    return [(images.numpy(), labels.numpy()) for images, labels in dataset]


@pytest.mark.parametrize("shuffle_buffer", [0, 40, 1000])
def test_a_pass_holds_every_row_once_with_its_features(tmp_path, shuffle_buffer):
    folder, rows = _numbered_split(tmp_path / "split.parquet", [50, 50, 50, 37, 50, 13, 50])
    batches = _one_pass(folder, batch_size=16, shuffle_buffer=shuffle_buffer)
    labels = np.concatenate([labels for _, labels in batches])
    assert sorted(labels.tolist()) == list(range(rows))
    assert all(labels.dtype == np.int32 for _, labels in batches)
    assert [len(labels) for _, labels in batches[:-1]] == [16] * (len(batches) - 1)
    for images, batch_labels in batches:
        assert images.dtype == np.uint8 and images.shape[1:] == PIXEL_SHAPE
        assert (images == (batch_labels % 251).astype(np.uint8)[:, None, None, None]).all()


def test_row_shuffle_is_seeded_and_mixes_rows_across_row_groups(tmp_path):
    folder, _ = _numbered_split(tmp_path / "split.parquet", [40] * 6)

    def order(shuffle_buffer: int) -> list[int]:
        batches = _one_pass(folder, batch_size=8, shuffle_buffer=shuffle_buffer)
        return np.concatenate([labels for _, labels in batches]).tolist()

    plain, shuffled = order(0), order(64)
    assert shuffled == order(64) and shuffled != plain
    # Without the row shuffle each row group arrives whole; with it, row groups are mixed.
    first_groups = {label // 40 for label in shuffled[:40]}
    assert len({label // 40 for label in plain[:40]}) == 1 and len(first_groups) > 1


def test_repeating_batches_have_a_static_full_shape(tmp_path):
    folder, _ = _numbered_split(tmp_path / "split.parquet", [30, 30, 30])
    dataset = split_dataset(folder, _Rows(), batch_size=16, rank=0, size=1, seed=0, shuffle_buffer=20)
    assert tuple(dataset.element_spec[0].shape) == (16, *PIXEL_SHAPE)
    assert tuple(dataset.element_spec[1].shape) == (16,)
    assert all(int(labels.shape[0]) == 16 for _, labels in dataset.take(20))


@pytest.mark.parametrize("size", [1, 2])
def test_several_readers_per_rank_read_exactly_the_shard_each_pass(tmp_path, size):
    folder, _ = _numbered_split(tmp_path / "split.parquet", [10] * 9)
    url = folder.resolve().as_uri()
    for rank in range(size):
        shard = {group for group in range(9) if group % size == rank}
        for readers in (1, 2, 3):
            tables = list(_row_group_tables(url, rank, size, 5, passes=2, first_pass=0, readers=readers))
            passes = [tables[: len(shard)], tables[len(shard) :]]
            for tables_of_pass in passes:
                groups = [table.column("label")[0].as_py() // 10 for table in tables_of_pass]
                assert sorted(groups) == sorted(shard), (rank, readers)


def test_rebatch_cuts_blocks_into_full_batches_in_order():
    blocks = [(np.arange(n) + start, np.arange(n) + start) for start, n in [(0, 5), (5, 0), (5, 3), (8, 10)]]
    batches = list(_rebatch(iter(blocks), 4, drop_remainder=False))
    assert [b.tolist() for b, _ in batches] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
        [12, 13, 14, 15],
        [16, 17],
    ]
    assert len(list(_rebatch(iter(blocks), 4, drop_remainder=True))) == 4


def test_rows_of_unequal_length_are_a_data_error(tmp_path):
    folder = tmp_path / "ragged.parquet"
    folder.mkdir()
    table = pa.table({"pixels": [b"\0" * 12, b"\0" * 11], "label": pa.array([0, 1], pa.int32())})
    pq.write_table(table, folder / "part-0.parquet")
    with pytest.raises(DataError, match="not all 12 bytes"):
        list(_row_group_batches(folder.resolve().as_uri(), 0, 1, 0, 1, 0, shape=PIXEL_SHAPE))
