"""The data profile of a preprocess, and the ``validate.*`` rules it must pass before training.

The profile (``Catalog.profile``, logged with each training's data) holds the rows per split and
class, the rows whose content (a hash of the decoded pixels, or of the text) appears more than
once, under two labels or in two splits (leakage), a histogram of the raw inputs' shapes (image
size and mode, text length) and the drift of the class and shape distributions against the
previous profile (population stability index). It is computed from small columns only (in Spark
jobs, ``data_profile``, or in the driver, ``duplicate_rows`` and ``assemble_profile``), before the
splits are written: a data set that breaks a rule is stopped before any pixel is written or any
rank starts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.core.config import ValidateConfig
from pipelines.core.errors import ValidationError
from pipelines.io import atomic, filesystems

log = logging.getLogger(__name__)

MAX_SHAPES = 24  # the most common shapes kept by name; the others are counted as "other"


def band(value: int | None, unit: str) -> str | None:
    """``value`` as its power-of-two band, e.g. 96 -> "64-127 px" (0 and below: "0 px"); the
    profile's shapes are such bands (``power_of_two_band`` is the same in Spark)."""
    if value is None:
        return None
    if value <= 0:
        return f"0 {unit}"
    low = 1 << (int(value).bit_length() - 1)
    return f"{low}-{2 * low - 1} {unit}"


def power_of_two_band(value: Column, unit: str) -> Column:
    """``band`` as a Spark column expression."""
    low = F.pow(F.lit(2), F.floor(F.log2(F.greatest(value, F.lit(1))))).cast("long")
    band = F.concat(low.cast("string"), F.lit("-"), (low * 2 - 1).cast("string"), F.lit(f" {unit}"))
    return F.when(value <= 0, F.lit(f"0 {unit}")).otherwise(band)


def data_profile(
    records: DataFrame, content: Column, shape: Column, counts: Iterable[Row], class_names: list[str]
) -> dict:
    """The profile of ``records`` (with ``split`` and ``label`` columns): ``counts`` are the
    ``summarize_splits`` rows (split, label, rows), ``content`` hashes a row's content, ``shape``
    names its raw shape."""
    counts = list(counts)
    # Per (content, label), then per content; min != max rather than countDistinct: plain hash
    # aggregations of small columns, no expanded copy of every row.
    by_label = records.groupBy(content.alias("content"), "label").agg(
        F.count(F.lit(1)).alias("n"), F.min("split").alias("first"), F.max("split").alias("last")
    )
    groups = by_label.groupBy("content").agg(
        F.sum("n").alias("n"),
        F.max("n").alias("top"),
        (F.count(F.lit(1)) > 1).alias("labels"),
        (F.min("first") != F.max("last")).alias("splits"),
    )
    found = groups.agg(
        F.sum(F.when(F.col("n") > 1, F.col("n"))).alias("repeated"),
        F.sum(F.when(F.col("labels"), F.col("n"))).alias("cross_label"),
        F.sum(F.col("n") - F.col("top")).alias("conflicting"),
        F.sum(F.when(F.col("splits"), F.col("n"))).alias("cross_split"),
    ).first()
    shapes = records.groupBy(shape.alias("shape")).count().collect()
    return assemble_profile(
        counts,
        {key: found[key] or 0 for key in _DUPLICATES},
        ((row["shape"], row["count"]) for row in shapes),
        class_names,
    )


_DUPLICATES = ("repeated", "cross_label", "conflicting", "cross_split")


def assemble_profile(
    counts: Iterable,
    duplicates: dict[str, int],
    shapes: Iterable[tuple[str | None, int]],
    class_names: list[str],
) -> dict:
    """The profile from its parts: ``counts`` ((split, label, rows) rows or mappings), the rows of
    each kind of ``duplicates`` (``duplicate_rows``) and the (shape, rows) pairs."""
    per_split = {name: {label: 0 for label in class_names} for name in SPLITS}
    for row in counts:
        per_split[row["split"]][row["label"]] = row["rows"]
    total = sum(sum(labels.values()) for labels in per_split.values())
    return {
        "rows": total,
        "classes": {label: sum(per_split[name][label] for name in SPLITS) for label in class_names},
        "splits": per_split,
        "duplicates": {
            key: {"rows": duplicates[key], "fraction": round(duplicates[key] / max(total, 1), 6)}
            for key in _DUPLICATES
        },
        "shapes": _top(((shape or "unknown", rows) for shape, rows in shapes), MAX_SHAPES),
    }


def duplicate_rows(content: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> dict[str, int]:
    """``data_profile``'s duplicate counts, in this process, from one entry per row: its content
    hash, label and split (integer codes). Rows whose content appears more than once (repeated),
    under two labels (cross_label), under another label than its content's most common one
    (conflicting) and in two splits (cross_split)."""
    # Only rows whose content repeats can count: keep those (a few, in most data sets) first.
    order = np.argsort(content, kind="stable")
    repeats = np.zeros(len(content), bool)
    if len(content) > 1:
        ordered = content[order]
        same = ordered[1:] == ordered[:-1]
        del ordered
        repeats[1:] |= same
        repeats[:-1] |= same
    kept = order[repeats]
    del order, repeats
    content, labels, splits = content[kept], labels[kept], splits[kept]
    if len(content) == 0:
        return dict.fromkeys(_DUPLICATES, 0)
    order = np.lexsort((splits, labels, content))
    content, labels, splits = content[order], labels[order], splits[order]
    # Per (content, label): rows and the smallest and largest split; then per content.
    pairs = np.flatnonzero(np.r_[True, (content[1:] != content[:-1]) | (labels[1:] != labels[:-1])])
    pair_rows = np.diff(np.r_[pairs, len(content)])
    first, last = np.minimum.reduceat(splits, pairs), np.maximum.reduceat(splits, pairs)
    pair_content = content[pairs]
    groups = np.flatnonzero(np.r_[True, pair_content[1:] != pair_content[:-1]])
    rows = np.add.reduceat(pair_rows, groups)
    labelled = np.diff(np.r_[groups, len(pairs)])
    in_two_splits = np.minimum.reduceat(first, groups) != np.maximum.reduceat(last, groups)
    return {
        "repeated": int(rows[rows > 1].sum()),
        "cross_label": int(rows[labelled > 1].sum()),
        "conflicting": int((rows - np.maximum.reduceat(pair_rows, groups)).sum()),
        "cross_split": int(rows[in_two_splits].sum()),
    }


def _top(pairs: Iterable[tuple[str, int]], keep: int) -> dict[str, int]:
    ordered = sorted(pairs, key=lambda pair: (-pair[1], pair[0]))
    top = dict(ordered[:keep])
    if len(ordered) > keep:
        top["other"] = sum(count for _, count in ordered[keep:])
    return top


def stability_index(current: dict[str, int], previous: dict[str, int], floor: float = 1e-4) -> float:
    """The population stability index of two count distributions over the union of their keys
    (each share at least ``floor``): 0 for the same shares; above 0.25 is usually read as a shift."""
    keys = set(current) | set(previous)
    now, before = sum(current.values()) or 1, sum(previous.values()) or 1
    index = 0.0
    for key in keys:
        p = max(current.get(key, 0) / now, floor)
        q = max(previous.get(key, 0) / before, floor)
        index += (p - q) * math.log(p / q)
    return round(index, 6)


def with_drift(profile: dict, previous: dict | None) -> dict:
    """``profile`` with its ``drift`` against ``previous`` (None when there is no previous profile)."""
    if previous is None:
        return {**profile, "drift": None}
    drift = {
        "classes": stability_index(profile["classes"], previous.get("classes", {})),
        "shapes": stability_index(profile["shapes"], previous.get("shapes", {})),
        "rows_before": previous.get("rows"),
    }
    return {**profile, "drift": drift}


@dataclass(frozen=True)
class Finding:
    """One broken rule: its key under ``validate.``, what was measured and the limit."""

    rule: str
    measured: str
    limit: str

    def line(self) -> str:
        return f"validate.{self.rule}: {self.measured} ({self.limit})"


def findings(profile: dict, rules: ValidateConfig, learns_classes: bool) -> list[Finding]:
    """Every rule of ``rules`` that ``profile`` breaks (the class rules only where ``learns_classes``)."""
    broken: list[Finding] = []
    classes = {label: rows for label, rows in profile["classes"].items() if rows}
    duplicates = profile["duplicates"]
    if learns_classes:
        if len(classes) < rules.min_classes:
            names = ", ".join(sorted(classes)) or "none"
            broken.append(
                Finding(
                    "min_classes",
                    f"{len(classes)} class{'es' if len(classes) != 1 else ''} with rows ({names})",
                    f"at least {rules.min_classes}; a classifier needs a class folder or label per class",
                )
            )
        train = profile["splits"]["train"]
        empty = sorted(label for label in classes if train.get(label, 0) < rules.min_train_rows_per_class)
        if empty:
            broken.append(
                Finding(
                    "min_train_rows_per_class",
                    f"{len(empty)} class(es) with fewer train rows: {', '.join(empty[:5])}",
                    f"at least {rules.min_train_rows_per_class} each",
                )
            )
        conflicting = duplicates["conflicting"]
        limit = rules.max_cross_label_fraction
        if limit is not None and conflicting["fraction"] > limit:
            broken.append(
                Finding(
                    "max_cross_label_fraction",
                    f"{conflicting['rows']} rows ({conflicting['fraction']:.2%}) have another label than "
                    "the most common one of the same content",
                    f"at most {limit:.2%}",
                )
            )
        if rules.max_imbalance is not None and len(classes) >= 2:
            ratio = max(classes.values()) / min(classes.values())
            if ratio > rules.max_imbalance:
                broken.append(
                    Finding(
                        "max_imbalance",
                        f"the largest class has {ratio:.1f}x the rows of the smallest",
                        f"at most {rules.max_imbalance:g}x",
                    )
                )
    for rule, key, what in (
        ("max_duplicate_fraction", "repeated", "appears more than once"),
        ("max_cross_split_fraction", "cross_split", "is in two splits"),
    ):
        limit = getattr(rules, rule)
        if limit is not None and duplicates[key]["fraction"] > limit:
            found = duplicates[key]
            broken.append(
                Finding(
                    rule,
                    f"{found['rows']} rows ({found['fraction']:.2%}) whose content {what}",
                    f"at most {limit:.2%}",
                )
            )
    drift = profile.get("drift")
    if rules.max_drift is not None and drift:
        for name, what in (("classes", "class"), ("shapes", "shape")):
            if drift[name] > rules.max_drift:
                broken.append(
                    Finding(
                        "max_drift",
                        f"the {what} distribution moved by a stability index of {drift[name]:.3f}",
                        f"at most {rules.max_drift:g}",
                    )
                )
    return broken


def checked_profile(catalog: Catalog, profile: dict, rules: ValidateConfig, learns_classes: bool) -> dict:
    """Add the drift against the last profile, apply ``rules`` and return the profile with its
    ``warnings``; it is written (``Catalog.profile``) when the splits are (``record_profile``).

    Raises:
        ValidationError: for the first broken rule, unless ``rules.mode`` is ``warn``.
    """
    previous = atomic.read_json(catalog.profile) if filesystems.is_file(catalog.profile) else None
    profile = with_drift(profile, previous)
    broken = findings(profile, rules, learns_classes)
    if broken and rules.mode == "fail":
        first = broken[0]
        raise ValidationError(first.rule, first.measured, first.limit)
    for finding in broken:
        log.warning("validation: %s", finding.line())
    return {**profile, "warnings": [finding.line() for finding in broken]}


def record_profile(catalog: Catalog, profile: dict) -> None:
    atomic.write_json_atomically(profile, catalog.profile)
