"""Fitted transforms: what preprocessing learned on the train split, reused by training and scoring."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageTransform:
    """Image geometry, class names (index = label) and per-channel statistics of the train split."""

    image_size: int
    class_names: list[str]
    mean: list[float]
    std: list[float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    def to_images(self, pixels: np.ndarray | list[bytes]) -> np.ndarray:
        """Raw uint8 pixel bytes (one per row) -> uint8 array of shape (n, size, size, 3)."""
        if isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8:
            return pixels.reshape((-1, *self.shape))
        flat = np.frombuffer(b"".join(pixels), dtype=np.uint8)
        return flat.reshape((-1, *self.shape))

    def save(self, path: Path) -> None:
        from pipelines.storage import write_json_atomically

        write_json_atomically({"kind": "image", **asdict(self)}, Path(path))

    @classmethod
    def load(cls, path: Path) -> ImageTransform:
        data = json.loads(Path(path).read_text())
        data.pop("kind", None)
        return cls(**data)
