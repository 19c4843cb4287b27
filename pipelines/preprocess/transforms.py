"""Fitted transforms: what preprocessing learned on the train split, reused by training, evaluation,
scoring and the served model. Each kind defines its own (``Transform`` is what shared code uses).

A transform is a frozen dataclass, saved as JSON with the ``module:Class`` it loads back into, so
that a kind outside this repository brings its own.
"""

from __future__ import annotations

import pkgutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipelines.core.errors import DataError

# Transforms saved before they named their class (a "kind" of "image" or "text"): where those
# classes are now, so that such workdirs keep working. Frozen: new transforms name their class.
_SAVED_BEFORE_CLASSES = {
    "image": "pipelines.kinds.image_cnn.transform:ImageTransform",
    "text": "pipelines.kinds.text_lstm.transform:TextTransform",
}


class Transform(Protocol):
    """What shared code needs of a fitted transform."""

    class_names: list[str]  # index = label
    feature_column: str  # the split column that feeds the model (bytes of ``feature_shape``)
    feature_dtype: str  # its numpy dtype

    @property
    def feature_shape(self) -> tuple[int, ...]: ...

    def model_input(self, rows: pd.DataFrame) -> Any:
        """Split rows -> what the logged model takes (the raw input a user would give it)."""
        ...

    def readable_files(self) -> dict[str, str]:
        """Parts of the transform to log as text files of their own (name -> content), e.g. a vocabulary."""
        ...


def class_indices(labels: Any, class_names: list[str]) -> np.ndarray:
    """A split's labels as int32 class indices: class names (the image kinds' splits keep them) are
    looked up in ``class_names``; indices (the text kind's) pass through.

    Raises:
        DataError: for a class name that is not among ``class_names``.
    """
    values = np.asarray(labels)
    if values.dtype.kind not in "OUS":
        return values.astype(np.int32, copy=False)
    index = {name: number for number, name in enumerate(class_names)}
    try:
        return np.fromiter((index[value] for value in values), np.int32, len(values))
    except KeyError as err:
        raise DataError(
            "split", f"has label {err.args[0]!r}, which is not one of the fitted classes"
        ) from None


def save_transform(transform: Transform, path: Path) -> None:
    from pipelines.io.atomic import write_json_atomically

    data = {key: value for key, value in asdict(transform).items() if not key.startswith("_")}
    cls = type(transform)
    write_json_atomically({"class": f"{cls.__module__}:{cls.__qualname__}", **data}, path)


def load_transform(path: Path) -> Transform:
    """Read a transform saved by ``save_transform``, whatever its class (local or a URI)."""
    from pipelines.io.atomic import read_json

    data = read_json(path)
    reference = data.pop("class", None) or _SAVED_BEFORE_CLASSES[data.pop("kind")]
    return pkgutil.resolve_name(reference)(**data)
