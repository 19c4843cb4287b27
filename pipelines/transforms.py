"""Fitted transforms: what preprocessing learned on the train split, reused by training and scoring.

Each transform says which split column feeds the model (``feature_column``), its dtype and shape,
and how to turn split rows into what the logged model takes (``model_input``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

PAD_ID, OOV_ID = 0, 1
RESERVED_TOKENS = ["<pad>", "<oov>"]
_TAG = re.compile(r"<[^>]{0,200}>")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # words, keeping inner apostrophes: don't, it's


@dataclass(frozen=True)
class ImageTransform:
    """Image geometry, class names (index = label) and per-channel statistics of the train split."""

    image_size: int
    class_names: list[str]
    mean: list[float]
    std: list[float]

    kind = "image"
    feature_column = "pixels"
    feature_dtype = "uint8"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.shape

    def to_images(self, pixels: np.ndarray | list[bytes]) -> np.ndarray:
        """Raw uint8 pixel bytes (one per row) -> uint8 array of shape (n, size, size, 3)."""
        if isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8:
            return pixels.reshape((-1, *self.shape))
        flat = np.frombuffer(b"".join(pixels), dtype=np.uint8)
        return flat.reshape((-1, *self.shape))

    def model_input(self, rows: pd.DataFrame) -> np.ndarray:
        """Split rows -> what the logged model takes: uint8 images."""
        return self.to_images(list(rows["pixels"]))


@dataclass(frozen=True)
class TextTransform:
    """Text normalisation settings, the vocabulary (index = token id) and the label names."""

    vocabulary: list[str]
    class_names: list[str]
    max_len: int
    lowercase: bool = True
    html_unescape: bool = True
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    kind = "text"
    feature_column = "tokens"
    feature_dtype = "int32"

    def __post_init__(self):
        object.__setattr__(self, "_index", {token: i for i, token in enumerate(self.vocabulary)})

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.max_len,)

    def encode_tokens(self, tokens: Iterable[str]) -> np.ndarray:
        """Tokens -> ``max_len`` int32 ids: unknown words are OOV, then truncated or padded at the end."""
        ids = [self._index.get(token, OOV_ID) for token in tokens][: self.max_len]
        return np.asarray(ids + [PAD_ID] * (self.max_len - len(ids)), dtype=np.int32)

    def encode(self, texts: Iterable[str | None]) -> np.ndarray:
        """Raw texts -> int32 array of shape (n, max_len)."""
        words = (tokenize(text, self.lowercase, self.html_unescape) for text in texts)
        rows = [self.encode_tokens(tokens) for tokens in words]
        return np.stack(rows) if rows else np.zeros((0, self.max_len), np.int32)

    def model_input(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Split rows -> what the logged model takes: raw text."""
        return pd.DataFrame({"text": rows["text"].astype(str)})


Transform = ImageTransform | TextTransform
_KINDS: dict[str, type] = {"image": ImageTransform, "text": TextTransform}


def tokenize(text: str | None, lowercase: bool = True, html_unescape: bool = True) -> list[str]:
    """The one tokenizer, used by Spark preprocessing and by the served model alike."""
    if not text:
        return []
    if html_unescape:
        text = _TAG.sub(" ", html.unescape(text))
    if lowercase:
        text = text.lower()
    return _TOKEN.findall(text)


def save_transform(transform: Transform, path: Path) -> None:
    from pipelines.storage import write_json_atomically

    data = {key: value for key, value in asdict(transform).items() if not key.startswith("_")}
    write_json_atomically({"kind": transform.kind, **data}, path)


def load_transform(path: Path) -> Transform:
    """Read a transform saved by ``save_transform``, whatever its kind (local or a URI)."""
    from pipelines.storage import read_json

    data = read_json(path)
    return _KINDS[data.pop("kind")](**data)
