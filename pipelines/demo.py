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


_POSITIVE = [
    "great",
    "wonderful",
    "brilliant",
    "moving",
    "superb",
    "delightful",
    "charming",
    "gripping",
    "hilarious",
    "beautiful",
    "clever",
    "stunning",
]
_NEGATIVE = [
    "awful",
    "boring",
    "dull",
    "terrible",
    "clumsy",
    "tedious",
    "predictable",
    "bland",
    "painful",
    "forgettable",
    "messy",
    "lifeless",
]
_SUBJECTS = [
    "the plot",
    "the acting",
    "the soundtrack",
    "the cast",
    "the script",
    "the cinematography",
    "the ending",
    "the pacing",
    "the dialogue",
    "the direction",
    "this film",
    "the lead",
]
_FILLER = [
    "I saw it on a rainy Sunday.",
    "My friend recommended it to me.",
    "It runs about two hours.",
    "The cinema was half empty.",
    "I watched it with my family.",
    "It is based on a novel.",
    "The director's previous film came out in 2019.",
    "There is a long scene set in Lisbon.",
]
_INTENSIFIERS = ["", "", "really ", "very ", "truly ", "quite ", "incredibly "]


def _opinion(rng: np.random.Generator, positive: bool) -> str:
    """One evaluative sentence; negated sentences carry the opposite word ('not boring' is praise)."""
    negated = rng.random() < 0.2
    words = (_NEGATIVE if negated else _POSITIVE) if positive else (_POSITIVE if negated else _NEGATIVE)
    subject = _SUBJECTS[rng.integers(len(_SUBJECTS))]
    verb = "is not" if negated else "is"
    intensifier = "" if negated else _INTENSIFIERS[rng.integers(len(_INTENSIFIERS))]
    return f"{subject.capitalize()} {verb} {intensifier}{words[rng.integers(len(words))]}."


def generate_review(rng: np.random.Generator, positive: bool) -> str:
    """A synthetic review whose sentiment the opinions carry, with the mess real reviews have."""
    sentences = []
    for _ in range(int(rng.integers(2, 9))):
        if rng.random() < 0.35:
            sentences.append(_FILLER[rng.integers(len(_FILLER))])
        else:  # mostly agreeing opinions, some mixed ones
            sentences.append(_opinion(rng, positive if rng.random() < 0.8 else not positive))
    text = " ".join(sentences)
    if rng.random() < 0.15:
        text = text.replace(". ", ".<br /><br />", 1)
    if rng.random() < 0.1:
        text = text.replace("'", "&#039;").replace(" and ", " &amp; ")
    if rng.random() < 0.05:
        text = text.replace(". ", ".\n", 1)  # a review spanning lines (quoted in the file)
    if rng.random() < 0.05:
        text += ' As one critic put it, "see it twice".'
    return text


def write_reviews(path: Path, count: int = 20_000, positive_share: float = 0.65, seed: int = 0) -> Path:
    """Write ``count`` generated movie reviews as a TSV (review, sentiment) with a header; return ``path``.

    About ``positive_share`` are positive, so the majority-class baseline is that share.
    """
    import csv

    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    with open(staging, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["review", "sentiment"])
        for _ in range(count):
            positive = bool(rng.random() < positive_share)
            writer.writerow([generate_review(rng, positive), "positive" if positive else "negative"])
    staging.replace(path)
    return path


def digits_demo(catalog) -> Path:
    """The image kinds' demo: the digits under the workdir's ``raw`` folder (a local workdir)."""
    from pipelines.storage import require_local

    return write_digits_images(require_local(catalog.demo_images, "the demo data (or set data.source)"))


def reviews_demo(catalog) -> Path:
    """The text kind's demo: generated reviews under the workdir's ``raw`` folder (a local workdir)."""
    from pipelines.storage import require_local

    return write_reviews(require_local(catalog.demo_texts, "the demo data (or set data.source)"))
