"""Data loading: shard planning, Petastorm -> tf.data batches, per-epoch reshuffle from a seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.catalog import Catalog
from pipelines.core.errors import DataError
from pipelines.io import parquet
from pipelines.preprocess.transforms import class_indices, load_transform
from pipelines.train.loader import (
    BatchBuffers,
    InputStall,
    ShardPlan,
    _read_ahead,
    _row_group_batches,
    batches,
    plan_shards,
    split_dataset,
)


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
    assert labels == Counter(class_indices(table.column("label").to_pylist(), transform.class_names).tolist())
    # And a second iteration of the same data set is a fresh full pass (what validation needs).
    assert sum(int(labels.shape[0]) for _, labels in dataset) == rows_of_rank[1] > 0


def test_repeating_dataset_never_runs_dry_and_batches_are_full(digits_workdir):
    catalog = Catalog.for_workdir(digits_workdir)
    transform = load_transform(catalog.transform)
    rows = sum(parquet.row_group_sizes(catalog.split("val")))
    dataset = split_dataset(catalog.split("val"), transform, batch_size=32, rank=0, size=2, seed=0)
    batches = list(dataset.take(3 * rows // 32 + 5))  # more than several passes over the shard
    assert all(int(images.shape[0]) == 32 for images, _ in batches)


def test_row_group_order_changes_every_pass_and_is_reproducible(digits_workdir):
    url = Catalog.for_workdir(digits_workdir).split("train").as_uri()

    def pass_orders(seed: int) -> list[list[int]]:
        orders: list[list[int]] = []
        groups = len(parquet.row_group_sizes(Catalog.for_workdir(digits_workdir).split("train")))
        batches = list(_row_group_batches(url, 0, 1, seed, passes=3, first_pass=0))
        for index in range(3):
            chunk = batches[index * groups : (index + 1) * groups]
            orders.append([hash(tuple(labels[:8])) + len(labels) for _, labels in chunk])
        return orders

    first, again = pass_orders(7), pass_orders(7)
    assert first == again  # same seed, same order: a run is reproducible
    assert first[0] != first[1] != first[2]  # yet each pass is shuffled anew
    assert sorted(first[0]) == sorted(first[1])  # the same row groups each pass


def _row_groups(sizes: list[int]) -> list[tuple[list[bytes], np.ndarray]]:
    """Row groups of 2x2x3 uint8 "images" as Petastorm hands them over (one byte string per row),
    each pixel equal to the row's label (0, 1, 2, ...)."""
    groups, start = [], 0
    for size in sizes:
        labels = np.arange(start, start + size, dtype=np.int32)
        groups.append(([bytes([label]) * 12 for label in labels], labels))
        start += size
    return groups


def _batches(sizes: list[int], batch_size: int, **options) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(batches(_row_groups(sizes), batch_size, (2, 2, 3), np.dtype(np.uint8), **options))


def test_batches_are_full_and_keep_every_row_once_in_order_without_shuffle():
    cut = _batches([5, 7, 3], 4)
    assert [len(labels) for _, labels in cut] == [4, 4, 4]  # 15 rows: the remainder is dropped
    assert np.concatenate([labels for _, labels in cut]).tolist() == list(range(12))
    assert all(features.ctypes.data % 64 == 0 and features.shape[1:] == (2, 2, 3) for features, _ in cut)
    kept = _batches([5, 7, 3], 4, drop_remainder=False)
    assert [len(labels) for _, labels in kept] == [4, 4, 4, 3]


def test_shuffled_batches_mix_row_groups_keep_rows_with_their_labels_and_repeat_by_seed():
    def run(seed: int) -> list[list[int]]:
        cut = _batches([8] * 6, 4, shuffle_rows=16, seed=seed, drop_remainder=False)
        for features, labels in cut:  # every image still carries its own label
            assert (features[:, 0, 0, 0] == labels).all()
        return [labels.tolist() for _, labels in cut]

    first = run(3)
    assert sorted(sum(first, [])) == list(range(48))
    assert first == run(3) and first != run(4)
    assert any(len({label // 8 for label in labels}) > 1 for labels in first)  # across row groups


def test_a_row_of_the_wrong_size_is_a_clear_error():
    groups = _row_groups([4])
    groups[0][0][2] = b"\0" * 5
    with pytest.raises(DataError, match="5 bytes of features, not 12"):
        list(batches(groups, 4, (2, 2, 3), np.dtype(np.uint8)))


def test_read_ahead_hands_over_every_item_and_raises_the_producers_error():
    stall = InputStall()
    assert list(_read_ahead(iter(range(10)), 2, stall)) == list(range(10))
    assert stall.take() >= 0 and stall.take() == 0

    def failing():
        yield 1
        raise DataError("part-0.parquet", "unreadable")

    with pytest.raises(DataError, match="unreadable"):
        list(_read_ahead(failing(), 2, None))


@pytest.mark.parametrize("readers", [1, 2, 3])
def test_parallel_readers_cover_each_ranks_row_groups_once_per_pass(tmp_path, readers):
    folder = tmp_path / "ids.parquet"
    folder.mkdir()
    table = pa.table({"pixels": [b"\0" * 3] * 36, "label": pa.array(range(36), pa.int32())})
    pq.write_table(table, folder / "part-0.parquet", row_group_size=4)  # 9 row groups
    seen: list[int] = []
    for rank in (0, 1):
        row_groups = list(_row_group_batches(folder.as_uri(), rank, 2, 5, 2, 0, readers=readers))
        half = len(row_groups) // 2
        passes = [
            sorted(int(label) for _, labels in part for label in labels)
            for part in (row_groups[:half], row_groups[half:])
        ]
        assert passes[0] == passes[1]  # every pass: the same rows of this rank, each once
        seen += passes[0]
    assert sorted(seen) == list(range(36))  # the ranks' shards together: every row once


def test_batch_buffers_reuse_an_array_only_when_nothing_holds_it_or_a_view_of_it():
    pool = BatchBuffers(limit=2)
    first = pool.take(2, (3,), np.dtype(np.uint8))
    assert first.ctypes.data % 64 == 0
    held = id(first)
    assert id(pool.take(2, (3,), np.dtype(np.uint8))) != held  # still held here
    view = first.view(np.dtype("<u1"))  # as handed to TensorFlow
    del first
    assert id(pool.take(2, (3,), np.dtype(np.uint8))) != held  # a view of it is still alive
    del view
    assert id(pool.take(2, (3,), np.dtype(np.uint8))) == held  # free again: reused
    assert pool.take(4, (3,), np.dtype(np.uint8)).shape == (4, 3)  # another shape: a fresh one
