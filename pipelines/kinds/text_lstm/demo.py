"""The text kind's demo data: generated movie reviews with a sentiment label, as TSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.core.catalog import Catalog
from pipelines.core.locations import require_local

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


def reviews_demo(catalog: Catalog) -> Path:
    """The text kind's demo: generated reviews under the workdir's ``raw`` folder (a local workdir)."""
    return write_reviews(
        require_local(catalog.demo_data("reviews.tsv"), "the demo data (or set data.source)")
    )
