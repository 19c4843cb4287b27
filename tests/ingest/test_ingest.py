"""Ingest: decoding every kind of image users have, and quarantining exactly what cannot be used."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyspark.sql.types import StringType
from sklearn.datasets import load_sample_images

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.core.errors import DataError
from pipelines.io import parquet
from pipelines.kinds.image_cnn import ingest
from pipelines.kinds.image_cnn.schemas import IMAGE_RECORDS
from pipelines.preprocess.splits import split_names
from tests.conftest import image_config, spark_must_not_start


def _photo() -> np.ndarray:
    return load_sample_images().images[0]  # a real 427x640 colour JPEG photo


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _pixels(data: bytes, size: int = 16) -> np.ndarray:
    return np.frombuffer(ingest.decode_image(data, size), np.uint8).reshape(size, size, 3)


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("L", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("CMYK", "JPEG"),
        ("L", "JPEG"),
        ("RGB", "JPEG"),
    ],
)
def test_decode_image_converts_every_mode_to_rgb_of_the_configured_size(mode, fmt):
    image = Image.fromarray(_photo()).convert(mode)
    assert _pixels(_encode(image, fmt)).shape == (16, 16, 3)


def test_sixteen_bit_png_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    data = _encode(Image.fromarray(ramp), "PNG")
    pixels = _pixels(data, 64)
    assert pixels.min() < 10 and pixels.max() > 245  # clipping at 255 would make nearly all white
    assert 100 < pixels.mean() < 155


def test_transparent_pixels_become_white():
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    pixels = _pixels(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), 8)
    assert (pixels == 255).all()


def test_exif_rotation_is_applied():
    # Stored wide with the left half red and the right half blue, tagged "rotate 90 CW to display":
    # after rotation red is on top and blue at the bottom.
    half = np.zeros((20, 40, 3), np.uint8)
    half[:, :20] = (255, 0, 0)
    half[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _pixels(_encode(Image.fromarray(half), "PNG", exif=exif.tobytes()), 8)
    assert rotated[0, 4, 0] > 200 and rotated[0, 4, 2] < 50
    assert rotated[-1, 4, 2] > 200 and rotated[-1, 4, 0] < 50


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"this is a text file, not an image", "cannot decode"),
        (_encode(Image.new("RGB", (8, 8)), "GIF"), "not a JPEG or PNG"),
    ],
)
def test_undecodable_input_raises_value_error_saying_why(data, reason):
    with pytest.raises(ValueError, match=reason):
        ingest.decode_image(data, 8)


def test_truncated_jpeg_is_rejected():
    data = _encode(Image.fromarray(_photo()), "JPEG")
    with pytest.raises(ValueError, match="cannot decode"):
        ingest.decode_image(data[: len(data) // 2], 8)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def messy_tree(tmp_path) -> tuple[Path, set[str]]:
    """A class-per-folder tree with real photos, odd modes and extensions, and planted bad files."""
    photo = Image.fromarray(_photo())
    root = tmp_path / "images"
    good = [
        _write(root / "cats" / "a.jpg", _encode(photo, "JPEG")),
        _write(root / "cats" / "B.JPEG", _encode(photo.convert("L"), "JPEG")),
        _write(root / "cats" / "nested" / "deeper" / "c.Png", _encode(photo.convert("RGBA"), "PNG")),
        _write(root / "dogs" / "d.png", _encode(photo.convert("P"), "PNG")),
        _write(root / "dogs" / "e.jpg", _encode(photo.convert("CMYK"), "JPEG")),
        _write(root / "dogs" / "f.PNG", _encode(Image.fromarray(np.full((9, 7), 40000, np.uint16)), "PNG")),
    ]
    full_jpeg = _encode(photo, "JPEG")
    bad = {
        _write(root / "cats" / "truncated.jpg", full_jpeg[: len(full_jpeg) // 3]),
        _write(root / "dogs" / "empty.png", b""),
        _write(root / "dogs" / "notes.jpg", b"just some text pretending to be a JPEG\n"),
    }
    # Hidden files and folders are ignored, as Spark ignores them.
    _write(root / "cats" / ".DS_Store", b"\0\0")
    _write(root / "_tmp" / "x.jpg", _encode(photo, "JPEG"))
    _write(root / "dogs" / ".hidden" / "y.jpg", _encode(photo, "JPEG"))
    assert len(good) == 6
    return root, {p.resolve().as_uri().replace("file:///", "file:/") for p in bad}


def test_ingest_quarantines_exactly_the_bad_files_and_accounts_for_every_file(spark, tmp_path, messy_tree):
    root, bad = messy_tree
    config = image_config(tmp_path / "work", "ingest.image_size=24")
    report = ingest.run(config, lambda: spark, str(root))

    catalog = Catalog.for_workdir(config.workdir)
    quarantine = spark.read.parquet(str(catalog.quarantine)).collect()
    assert {row.path for row in quarantine} == bad
    reasons = {Path(row.path).name: row.reason for row in quarantine}
    assert reasons["empty.png"] == "empty file"
    assert "cannot decode" in reasons["truncated.jpg"] and "cannot decode" in reasons["notes.jpg"]

    assert report.files_seen == 9 == report.rows_written + report.rows_quarantined
    assert (report.rows_written, report.rows_quarantined, report.classes) == (6, 3, 2)

    images = spark.read.parquet(str(catalog.ingested))
    declared = [(f.name, f.dataType) for f in IMAGE_RECORDS]
    # Written split: the folder of each split's records is read back as a ``split`` column.
    assert [(f.name, f.dataType) for f in images.schema] == [*declared, ("split", StringType())]
    rows = images.collect()
    assert all(row.split == split_names([row.relpath], config.preprocess.split)[0] for row in rows)
    assert {row.label for row in rows} == {"cats", "dogs"}
    assert all(len(row.pixels) == 24 * 24 * 3 and row.reason is None for row in rows)
    assert "cats/nested/deeper/c.Png" in {row.relpath for row in rows}
    for row in rows:  # the statistics preprocess fits come from these sums
        pixels = np.frombuffer(row.pixels, np.uint8).reshape(-1, 3).astype(np.float64)
        assert row.channel_sum == pixels.sum(axis=0).tolist()
        assert row.channel_sq_sum == (pixels**2).sum(axis=0).tolist()


@pytest.mark.parametrize(
    "settings, in_driver",
    [
        (("ingest.driver_increment_files=0",), False),
        ((), True),  # 300 small files: under both of the driver's limits
        (("ingest.task_bytes=100000",), False),  # more bytes than one Spark task reads
    ],
    ids=["spark-tasks", "in-the-driver", "too-many-bytes-for-the-driver"],
)
def test_ingest_plans_the_same_tasks_in_spark_and_in_the_driver(spark, tmp_path, settings, in_driver):
    """The same task plan, and so the same files and row groups per split, whether Spark runs the
    tasks or the driver does (at most ingest.driver_increment_files files and ingest.task_bytes):
    each rank streams whole row groups, so a small split must not shrink to one. In Spark, nothing
    is read through the driver."""
    from pipelines.kinds.image_cnn.demo import write_synthetic_images

    root = write_synthetic_images(tmp_path / "many", 300, size=20, classes=3, processes=1)
    config = image_config(tmp_path / "work", "ingest.image_size=8", "ingest.task_files=40", *settings)
    no_spark = spark_must_not_start("an ingest the driver should do")
    report = ingest.run(config, no_spark if in_driver else lambda: spark, str(root))
    assert (report.files_seen, report.rows_written, report.classes) == (300, 300, 3)
    assert (report.spark_jobs == 0) == in_driver
    tasks = len(list((tmp_path / "work" / "ingest" / "listing").glob("part-*.parquet")))
    if "ingest.task_bytes=100000" in settings:
        assert tasks > 8  # tasks of at most 100,000 bytes
        return
    assert tasks == 8  # 300 files at most 40 per task
    catalog = Catalog.for_workdir(tmp_path / "work")
    assert [len(parquet.data_files(catalog.ingested_split(name))) for name in SPLITS] == [8, 8, 8]


def test_task_plan_balances_bytes_and_caps_files():
    from pipelines.kinds.image_cnn.config import IngestConfig

    settings = IngestConfig(task_bytes=1_000_000, task_files=100)
    sizes = np.full(1000, 5_000)
    starts = ingest.plan_tasks(sizes, settings, cores=4)
    assert starts[0] == 0 and starts[-1] == 1000
    assert np.diff(starts).max() <= 100 and np.diff(starts).min() > 0
    assert (len(starts) - 1) % 4 == 0  # full rounds: no core idles while the last task runs
    assert len(ingest.plan_tasks(np.full(3, 10), settings, cores=8)) - 1 == 3  # never an empty task


def test_files_outside_class_folders_are_quarantined(spark, tmp_path):
    root = tmp_path / "flat"
    _write(root / "loose.png", _encode(Image.new("RGB", (4, 4)), "PNG"))
    _write(root / "ok" / "fine.png", _encode(Image.new("RGB", (4, 4)), "PNG"))
    report = ingest.run(image_config(tmp_path / "work"), lambda: spark, str(root))
    quarantine = spark.read.parquet(str(Catalog.for_workdir(tmp_path / "work").quarantine)).collect()
    assert [(Path(r.path).name, r.reason) for r in quarantine] == [("loose.png", ingest.OUTSIDE_CLASS_FOLDER)]
    assert (report.rows_written, report.rows_quarantined) == (1, 1)


def test_a_flat_folder_fails_in_one_line_naming_the_expected_layout(spark, tmp_path):
    root = tmp_path / "flat"
    for name in ("a.png", "b.png"):
        _write(root / name, _encode(Image.new("RGB", (4, 4)), "PNG"))
    with pytest.raises(DataError) as raised:
        ingest.run(image_config(tmp_path / "work"), lambda: spark, str(root))
    message = str(raised.value)
    assert "\n" not in message and "no usable files found: 2 of 2 not inside a class folder" in message
    assert "one sub-folder per class, SOURCE/CLASS/IMAGE" in message


def test_missing_source_is_a_clear_error(spark, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ingest.run(image_config(tmp_path / "work"), lambda: spark, str(tmp_path / "nope"))


def test_links_into_the_tree_are_quarantined_once_and_every_file_is_counted_once(spark, tmp_path):
    root = tmp_path / "linked"
    for name in ("x1", "x2"):
        _write(root / "a" / f"{name}.png", _encode(Image.new("RGB", (4, 4)), "PNG"))
    _write(root / "b" / "y.png", _encode(Image.new("RGB", (4, 4)), "PNG"))
    _write(tmp_path / "elsewhere" / "z.png", _encode(Image.new("RGB", (4, 4)), "PNG"))
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # a/loop/a/loop/... forever
    (root / "a" / "also_b").symlink_to(root / "b", target_is_directory=True)  # b's images are not a's
    (root / "b" / "dead.png").symlink_to(tmp_path / "nowhere.png")
    (root / "c").mkdir()
    (root / "c" / "one").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # outside: followed
    (root / "c" / "two").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # once only

    report = ingest.run(image_config(tmp_path / "work"), lambda: spark, str(root))

    assert (report.files_seen, report.rows_written, report.rows_quarantined) == (8, 4, 4)
    catalog = Catalog.for_workdir(tmp_path / "work")
    written = sorted(r.relpath for r in spark.read.parquet(str(catalog.ingested)).collect())
    assert written[:3] == ["a/x1.png", "a/x2.png", "b/y.png"] and written[3] in ("c/one/z.png", "c/two/z.png")
    quarantine = {r.relpath: r.reason for r in spark.read.parquet(str(catalog.quarantine)).collect()}
    assert quarantine.pop("b/dead.png").startswith("cannot read file")
    assert set(quarantine) in ({"a/loop", "a/also_b", "c/one"}, {"a/loop", "a/also_b", "c/two"})
    assert all(reason.startswith("a link to a folder listed already") for reason in quarantine.values())


def test_the_demo_digits_are_scikit_learns_digits():
    from sklearn.datasets import load_digits

    from pipelines.kinds.image_cnn.demo import digits

    images, labels = digits()
    expected = load_digits()
    assert np.array_equal(images, expected.images) and np.array_equal(labels, expected.target)
