"""Pipeline YAML files -> the validated config of the kind they name (``pipeline:``).

``conf/base.yaml`` beside the pipeline's file is merged under it; KEY=VALUE overrides are applied
last. Above ``pipelines.kinds``: which config class validates a file depends on the kind it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipelines.core.config import BASE_CONFIG_NAME, PipelineConfig
from pipelines.core.errors import ConfigError
from pipelines.kinds import kind_named


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Load ``path`` (merged over base.yaml beside it), apply KEY=VALUE overrides, validate.

    Raises:
        ConfigError: naming the file, or the dotted key and what is wrong with it.
    """
    path = Path(path)
    raw: dict[str, Any] = {}
    base = path.parent / BASE_CONFIG_NAME
    if base.is_file() and base.resolve() != path.resolve():
        raw = _read_yaml(base)
    raw = _deep_merge(raw, _read_yaml(path))
    for override in overrides:
        key, value = _parse_override(override)
        _set_dotted(raw, key, value)
    model = kind_named(raw.get("pipeline")).config
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(_dotted(first["loc"]), _describe(first, model)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(str(path), "no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "must hold a mapping of keys to values")
    return data


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(text, "overrides are written KEY=VALUE, e.g. train.epochs=2")
    try:
        return key.strip(), yaml.safe_load(value) if value else None
    except yaml.YAMLError:
        return key.strip(), value


# Sections whose keys are names with dots of their own: spark.conf.spark.driver.memory=4g sets the
# key "spark.driver.memory" inside spark.conf.
_FREE_FORM_SECTIONS = ("spark.conf",)


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    section = next((s for s in _FREE_FORM_SECTIONS if key.startswith(s + ".")), None)
    if section:
        *parents, leaf = [*section.split("."), key[len(section) + 1 :]]
        value = None if value is None else str(value)
    else:
        *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parents[: i + 1]), "is a value, not a section")
        node = child
    node[leaf] = value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "config"


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    if error["type"] == "extra_forbidden":
        section = _section_at(model, error["loc"][:-1])
        valid = ", ".join(sorted(f.alias or n for n, f in section.model_fields.items())) if section else ""
        return f"unknown key (valid keys here: {valid})"
    if error["type"] == "missing":
        return "required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if "input" in error and not isinstance(error["input"], dict):
        message += f" (got {error['input']!r})"
    return message


def _section_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    for part in loc:
        by_key = {field.alias or name: field for name, field in model.model_fields.items()}
        field = by_key.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
