"""Ingest stage: a class-per-folder image tree -> decoded, resized RGB pixels in Parquet.

Files that cannot be used go to a quarantine table with the reason, and every run checks
files seen = rows written + rows quarantined.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from pipelines import schemas, storage
from pipelines.catalog import Catalog
from pipelines.config import ImagePipelineConfig
from pipelines.errors import DataError

log = logging.getLogger(__name__)

IMAGE_FORMATS = ("JPEG", "PNG")
_DECODED = StructType([StructField("pixels", BinaryType(), True), StructField("error", StringType(), True)])


@dataclass(frozen=True)
class IngestReport:
    """What one ingest run saw and did with it."""

    files_seen: int
    rows_written: int
    rows_quarantined: int
    classes: int
    image_size: int


def decode_image(content: bytes | None, size: int) -> bytes:
    """Decode a JPEG/PNG of any mode, apply EXIF rotation, convert to RGB, resize to size x size.

    Returns the pixels as size*size*3 uint8 bytes. Raises ValueError saying why it cannot.
    """
    from PIL import Image, ImageOps

    if not content:
        raise ValueError("empty file")
    try:
        image = Image.open(io.BytesIO(content))
        if image.format not in IMAGE_FORMATS:
            raise ValueError(f"not a JPEG or PNG image (found {image.format})")
        image.load()  # decodes fully: truncated data fails here, not later
        image = ImageOps.exif_transpose(image)
    except ValueError:
        raise
    except Exception as err:  # Pillow raises many types for corrupt data
        raise ValueError(f"cannot decode image: {type(err).__name__}: {err}") from None
    rgb = _to_rgb(image)
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).tobytes()


def _to_rgb(image):
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping at 255.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "F" or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _decode_series(contents: pd.Series, size: int) -> pd.DataFrame:
    pixels, errors = [], []
    for content in contents:
        try:
            pixels.append(decode_image(content, size))
            errors.append(None)
        except ValueError as err:
            pixels.append(None)
            errors.append(str(err))
    return pd.DataFrame({"pixels": pixels, "error": errors})


def label_files(files: DataFrame, source_uri: str) -> DataFrame:
    """Add ``relpath`` (path under the source) and ``label`` (its first folder) to listed files.

    Hidden files and folders (names starting with '.' or '_') are removed, as Spark does.
    Files directly under the source have no class: their label is null.
    """
    prefix = source_uri.rstrip("/") + "/"
    relpath = F.expr(f"substring(path, {len(prefix) + 1})")
    parts = F.split(relpath, "/")
    hidden = F.exists(parts, lambda part: part.startswith(".") | part.startswith("_"))
    return (
        files.withColumn("relpath", relpath)
        .where(~hidden)
        .withColumn("label", F.when(F.size(parts) > 1, parts.getItem(0)))
    )


def decode_images(files: DataFrame, image_size: int) -> DataFrame:
    """Decode the ``content`` column into ``pixels``; a file that fails gets an ``error`` instead."""

    @F.pandas_udf(_DECODED)
    def decode(contents: pd.Series) -> pd.DataFrame:
        return _decode_series(contents, image_size)

    reason = F.when(F.col("label").isNull(), F.lit("not inside a class folder"))
    return (
        files.withColumn("decoded", decode(F.col("content")))
        .withColumn("pixels", F.col("decoded.pixels"))
        .withColumn("reason", F.coalesce(reason, F.col("decoded.error")))
        .drop("decoded", "content")
    )


def write_accounted(
    checked: DataFrame,
    seen: int,
    good_schema: StructType,
    bad_schema: StructType,
    catalog: Catalog,
    source: str,
    unit: str,
) -> tuple[int, int, int]:
    """Write rows without a ``reason`` to the ingested table and the rest to quarantine, then check
    that ``seen`` = rows written + rows quarantined, counting what was actually written.

    Returns (rows written, rows quarantined, classes). Raises DataError when a row went missing or
    nothing was usable.
    """
    spark = checked.sparkSession
    good = checked.where(F.col("reason").isNull())
    bad = checked.where(F.col("reason").isNotNull())
    storage.write_parquet_atomically(schemas.conform(good, good_schema), catalog.ingested)
    storage.write_parquet_atomically(schemas.conform(bad, bad_schema), catalog.quarantine)
    written = spark.read.parquet(str(catalog.ingested))
    rows_written, rows_quarantined = written.count(), spark.read.parquet(str(catalog.quarantine)).count()
    if seen != rows_written + rows_quarantined:
        raise DataError(
            source,
            f"{unit} seen ({seen}) != rows written ({rows_written}) + rows quarantined ({rows_quarantined})",
        )
    if rows_written == 0:
        raise DataError(source, f"no usable {unit} found (see the quarantine table)")
    return rows_written, rows_quarantined, written.select("label").distinct().count()


def run(config: ImagePipelineConfig, spark: SparkSession, source: str) -> IngestReport:
    """Ingest the image tree at ``source`` into the catalog's images and quarantine tables."""
    catalog = Catalog.for_workdir(config.workdir)
    try:
        listed = storage.list_files(spark, source)
    except FileNotFoundError:
        raise DataError(source, "data.source does not exist") from None
    source_uri = storage.qualified_uri(spark, source)
    files = label_files(spark.createDataFrame(listed, "path string, size long"), source_uri)
    # binaryFile silently skips zero-byte files: join onto our own listing so none is lost.
    contents = (spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(source)).select(
        "path", "content"
    )
    joined = files.join(contents, "path", "left").repartition(
        max(2, spark.sparkContext.defaultParallelism * 2)
    )
    decoded = decode_images(joined, config.ingest.image_size).persist(StorageLevel.MEMORY_AND_DISK)
    seen = files.count()
    try:
        written, quarantined, classes = write_accounted(
            decoded, seen, schemas.IMAGES, schemas.QUARANTINE, catalog, source, "files"
        )
    finally:
        decoded.unpersist()
    report = IngestReport(seen, written, quarantined, classes, config.ingest.image_size)
    storage.write_json_atomically(asdict(report), catalog.ingest_report)
    log.info(
        "ingest: %d files seen, %d rows written, %d quarantined, %d classes",
        report.files_seen,
        report.rows_written,
        report.rows_quarantined,
        report.classes,
    )
    return report
