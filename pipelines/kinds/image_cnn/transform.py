"""The image kinds' fitted transform: geometry, class names and the train split's channel statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ImageTransform:
    """Image geometry, class names (index = label) and per-channel statistics of the train split."""

    image_size: int
    class_names: list[str]
    mean: list[float]
    std: list[float]

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

    def readable_files(self) -> dict[str, str]:
        return {}

    def model_input(self, rows: pd.DataFrame) -> np.ndarray:
        """Split rows -> what the logged model takes: uint8 images."""
        return self.to_images(list(rows["pixels"]))
