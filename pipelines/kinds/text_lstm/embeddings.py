"""Pre-trained word vectors (the common text format: a word, then its numbers, per line) aligned to
the fitted vocabulary, to start the text classifier's embedding from."""

from __future__ import annotations

import io
import logging

import numpy as np

from pipelines.core.errors import ConfigError
from pipelines.io import filesystems

log = logging.getLogger(__name__)


def aligned_vectors(location: str, vocabulary: list[str], dim: int, seed: int) -> tuple[np.ndarray, int]:
    """A (len(vocabulary), dim) matrix: row i is the vector of ``vocabulary[i]`` from the file at
    ``location`` (local or any file system), small random values for words it lacks, zeros for
    the padding id 0. Returns (matrix, words found). A first line of two numbers (word2vec's
    header) is skipped.

    Raises:
        ConfigError: naming ``model.embeddings`` when the file cannot be read or its vectors are
            not ``dim`` numbers (``model.embedding_dim``).
    """
    index = {word: number for number, word in enumerate(vocabulary)}
    matrix = np.random.default_rng(seed).normal(0.0, 0.05, (len(vocabulary), dim)).astype(np.float32)
    matrix[0] = 0.0
    found = set()
    try:
        stream = filesystems.open_input(filesystems.source_uri(location))
    except OSError as err:
        raise ConfigError("model.embeddings", f"cannot read {location}: {err}") from None
    with stream, io.TextIOWrapper(stream, encoding="utf-8", errors="replace") as text:
        for number, line in enumerate(text):
            word, _, rest = line.rstrip("\n").partition(" ")
            if number == 0 and word.isdigit() and rest.strip().isdigit():
                continue  # word2vec's "count dim" header
            row = index.get(word)
            if row is None or row == 0 or row in found:
                continue
            values = np.array(rest.split(), dtype=np.float32)
            if values.shape != (dim,):
                raise ConfigError(
                    "model.embeddings",
                    f"{location} line {number + 1} has {values.size} numbers; model.embedding_dim is {dim}",
                )
            matrix[row] = values
            found.add(row)
    log.info("model.embeddings: %d of %d vocabulary words found in %s", len(found), len(vocabulary), location)
    return matrix, len(found)
