"""The text kind's fitted transform (vocabulary, label names) and the one tokenizer, used by Spark
preprocessing and by the served model alike."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PAD_ID, OOV_ID = 0, 1
RESERVED_TOKENS = ["<pad>", "<oov>"]
_TAG = re.compile(r"<[^>]{0,200}>")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # words, keeping inner apostrophes: don't, it's


@dataclass(frozen=True)
class TextTransform:
    """Text normalisation settings, the vocabulary (index = token id) and the label names."""

    vocabulary: list[str]
    class_names: list[str]
    max_len: int
    lowercase: bool = True
    html_unescape: bool = True
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

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

    def readable_files(self) -> dict[str, str]:
        return {"vocabulary.txt": "\n".join(self.vocabulary)}

    def model_input(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Split rows -> what the logged model takes: raw text."""
        return pd.DataFrame({"text": rows["text"].astype(str)})


def tokenize(text: str | None, lowercase: bool = True, html_unescape: bool = True) -> list[str]:
    """The one tokenizer, used by Spark preprocessing and by the served model alike."""
    if not text:
        return []
    if html_unescape:
        text = _TAG.sub(" ", html.unescape(text))
    if lowercase:
        text = text.lower()
    return _TOKEN.findall(text)
