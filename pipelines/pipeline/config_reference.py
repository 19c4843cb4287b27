"""The configuration reference (docs/configuration.md), generated from the pydantic models: every key
of the shared sections, then each installed kind's own, with its type, default and description.

``python -m pipelines.pipeline.config_reference > docs/configuration.md`` rewrites it; a test fails when the
file and the models disagree.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from pipelines.core.config import PipelineBase
from pipelines.kinds import kind_named, registered


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(json.dumps(value) for value in typing.get_args(annotation))
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "").replace("NoneType", "None").replace("|", "\\|")


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory else field.default
    return f"`{json.dumps(value, default=str)}`"


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        if _is_section(field.annotation):
            rows += _rows(field.annotation, f"{key}.")
        else:
            description = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{key}` | {_type(field.annotation)} | {_default(field)} | {description} |")
    return rows


def _table(rows: list[str]) -> str:
    return "\n".join(["| key | type | default | description |", "| --- | --- | --- | --- |", *rows])


def reference() -> str:
    """The whole reference page, as Markdown."""
    shared = set(PipelineBase.model_fields)
    parts = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models by `python -m pipelines.pipeline.config_reference > "
        "docs/configuration.md`; `tests/core/test_config.py` fails when this page is stale. A pipeline's "
        "YAML (`conf/<kind>.yaml`) is merged over `conf/base.yaml` beside it, and `KEY=VALUE` "
        "arguments override both (`train.epochs=2`); an unknown key is an error naming it. The "
        "defaults below are the models' own: `conf/base.yaml` and the kinds' YAML files set some "
        "differently (`workdir`, `train.epochs`, ...).",
        "",
        "## Every kind",
        "",
        _table(_rows(PipelineBase)),
    ]
    for name in registered():
        config = kind_named(name).config
        rows = [row for n in config.model_fields for row in _own_rows(config, n, shared)]
        parts += ["", f"## `{name}`", "", f"`pipeline: {name}`; its own sections and keys:", "", _table(rows)]
    return "\n".join(parts) + "\n"


def _own_rows(config: type[BaseModel], name: str, shared: set[str]) -> list[str]:
    """The rows of ``config``'s field ``name`` that the shared keys do not have (all of a kind's own
    section; the added keys of a shared section it extends, such as the image kind's ``train``)."""
    rows = _rows(_only(config, name))
    if name not in shared:
        return rows
    common = set(_rows(_only(PipelineBase, name)))
    return [row for row in rows if row not in common]


def _only(model: type[BaseModel], name: str) -> type[BaseModel]:
    """A model holding ``model``'s field ``name`` alone, for its rows."""
    from pydantic import create_model

    field = model.model_fields[name]
    return create_model(f"Only{name}", **{name: (field.annotation, field)})


if __name__ == "__main__":
    print(reference(), end="")
