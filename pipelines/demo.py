"""The demo data set: scikit-learn's digits (real handwritten scans shipped with the package) as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_digits_images(folder: Path) -> Path:
    """Write the 1,797 digits as 8x8 greyscale PNGs in one sub-folder per class; return ``folder``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    marker = folder / "_COMPLETE"  # hidden from ingest, like Spark's _SUCCESS
    if marker.is_file():
        return folder
    for index, (image, target) in enumerate(zip(digits.images, digits.target, strict=False)):
        pixels = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
        path = folder / str(target) / f"digit_{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(path)
    marker.touch()
    return folder
