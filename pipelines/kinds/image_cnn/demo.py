"""The image kinds' demo data: scikit-learn's digits (real handwritten scans shipped with the
package) as PNG files, and synthetic JPEG trees of any size for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipelines.core.catalog import Catalog
from pipelines.core.locations import require_local


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: (1,797 8x8 images with values 0..16, their labels).

    Read from the CSV file scikit-learn ships, without importing scikit-learn (0.8 s of the demo's
    start, measured), which ``load_digits`` reads the same way; through ``load_digits`` if that file
    is not where scikit-learn 1.x keeps it."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    shipped = (
        Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    )
    if shipped is None or not shipped.is_file():
        from sklearn.datasets import load_digits

        loaded = load_digits()
        return loaded.images, loaded.target
    table = np.loadtxt(shipped, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def write_digits_images(
    folder: Path, classes: Iterable[int] | None = None, per_class: int | None = None
) -> Path:
    """Write the 1,797 digits as 8x8 greyscale PNGs in one sub-folder per class; return ``folder``.
    ``classes`` and ``per_class`` keep only those classes, and the first images of each."""
    from PIL import Image

    marker = folder / "_COMPLETE"  # hidden from ingest, like Spark's _SUCCESS
    if marker.is_file():
        return folder
    images, labels = digits()
    seen: dict[int, int] = {}
    for index, (image, target) in enumerate(zip(images, labels, strict=True)):
        seen[target] = seen.get(target, 0) + 1
        if (classes is not None and target not in classes) or (per_class and seen[target] > per_class):
            continue
        pixels = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
        path = folder / str(target) / f"digit_{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(path)
    marker.touch()
    return folder


def _synthetic_image(rng: np.random.Generator, label: int, classes: int, size: int) -> np.ndarray:
    """A smooth colour image whose hue and pattern depend on ``label`` (compresses like a photo)."""
    coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    tile = np.kron(coarse, np.ones((-(-size // 6), -(-size // 6), 1), np.uint8))[:size, :size]
    hue = np.array([(label * 97) % 256, (label * 59 + 80) % 256, 255 - (label * 255) // max(classes, 1)])
    return ((tile.astype(np.uint16) + hue) // 2).astype(np.uint8)


def _write_synthetic_share(args: tuple[Path, int, int, int, int, int]) -> int:
    folder, start, stop, classes, size, seed = args
    from PIL import Image

    rng = np.random.default_rng([seed, start])
    for index in range(start, stop):
        label = index % classes
        path = folder / f"class_{label:02d}" / f"img_{index:07d}.jpg"
        Image.fromarray(_synthetic_image(rng, label, classes, size)).save(path, "JPEG", quality=85)
    return stop - start


def write_synthetic_images(
    folder: Path, count: int, size: int = 96, classes: int = 10, seed: int = 0, processes: int | None = None
) -> Path:
    """Write ``count`` distinct JPEGs of ``size`` x ``size`` in ``classes`` class folders; return ``folder``.

    For scale tests and benchmarks (about 4 KB a file at 96 x 96). A ``_COMPLETE`` marker makes a
    second call with the same arguments free; the work is spread over ``processes`` processes.
    """
    import multiprocessing

    marker = folder / f"_COMPLETE-{count}-{size}-{classes}-{seed}"
    if marker.is_file():
        return folder
    for label in range(classes):
        (folder / f"class_{label:02d}").mkdir(parents=True, exist_ok=True)
    step = 4_000
    shares = [(folder, i, min(i + step, count), classes, size, seed) for i in range(0, count, step)]
    with multiprocessing.get_context("spawn").Pool(processes or multiprocessing.cpu_count()) as pool:
        written = sum(pool.imap_unordered(_write_synthetic_share, shares))
    assert written == count
    marker.touch()
    return folder


def digits_demo(catalog: Catalog) -> Path:
    """The image kinds' demo: the digits under the workdir's ``raw`` folder (a local workdir)."""
    return write_digits_images(
        require_local(catalog.demo_data("digits"), "the demo data (or set data.source)")
    )
