"""The preprocess stage: the kind's preprocess part (splits and the fitted transform)."""

from __future__ import annotations

from functools import partial

from pipelines.core.config import PipelineConfig
from pipelines.core.stages import StageResult
from pipelines.kinds import kind_of
from pipelines.runtime.spark import get_spark


def run(config: PipelineConfig) -> StageResult:
    """Split the ingested data, fit the transform on train, write one Parquet data set per split."""
    report = kind_of(config).part("preprocess")(config, partial(get_spark, config.spark))
    splits = {name: split["rows"] for name, split in report["splits"].items()}
    profile = report["profile"]
    summary = {
        "splits": splits,
        "preprocess": {
            "seconds": report["seconds"],
            "spark_jobs": report["spark_jobs"],
            "transform_kept": report.get("transform_kept", False),
            "snapshot": (report.get("snapshot") or {}).get("number"),
        },
        "profile": {
            "classes": profile["classes"],
            "duplicates": {key: found["rows"] for key, found in profile["duplicates"].items()},
            "drift": profile["drift"],
            "warnings": profile["warnings"],
        },
    }
    lines = ("rows per split: " + ", ".join(f"{k}={v}" for k, v in splits.items()), profile_line(profile))
    if report.get("transform_kept"):
        lines += ("transform: kept from the last preprocess (preprocess.refit=true fits it again)",)
    return StageResult(summary, lines + tuple(f"warning: {line}" for line in profile["warnings"]))


def profile_line(profile: dict) -> str:
    """The profile in one line: classes, duplicates and the drift since the last preprocess."""
    found = profile["duplicates"]
    drift = profile["drift"]
    since = "first profile" if drift is None else f"drift since the last: classes {drift['classes']:.3f}"
    return (
        f"profile: {sum(1 for rows in profile['classes'].values() if rows)} classes, "
        f"{found['repeated']['rows']} rows with repeated content ({found['cross_label']['rows']} under two "
        f"labels, {found['conflicting']['rows']} of them against the majority label; "
        f"{found['cross_split']['rows']} in two splits); {since} (in preprocess/profile.json)"
    )
