"""The sentiment classifier's model: the LSTM on every rank, and the served pyfunc (raw text in)."""

from __future__ import annotations

import pandas as pd

from pipelines.kinds.classifier.serving import KerasClassifier, probabilities_example
from pipelines.kinds.classifier.task import ClassifierTask
from pipelines.kinds.text_lstm.embeddings import aligned_vectors


class LstmTask(ClassifierTask):
    _vectors = None  # model.embeddings aligned to the vocabulary

    def build_model(self, config, transform):
        from models.lstm import build_lstm

        settings = config.model
        if settings.embeddings and self._vectors is None:  # read once: build, then export
            self._vectors, _ = aligned_vectors(
                settings.embeddings, transform.vocabulary, settings.embedding_dim, config.train.seed
            )
        return build_lstm(
            transform.max_len,
            len(transform.vocabulary),
            len(transform.class_names),
            embedding_dim=settings.embedding_dim,
            lstm_units=settings.lstm_units,
            architecture=settings.architecture,
            embeddings=self._vectors,
            train_embeddings=settings.train_embeddings,
        )


class TextClassifier(KerasClassifier):
    """Takes raw text: a DataFrame with a ``text`` column (or a list of strings)."""

    def features(self, model_input):
        texts = model_input["text"] if isinstance(model_input, pd.DataFrame) else model_input
        return self.transform.encode(list(texts))


def served_model(transform, model_config):
    """The pyfunc, an input example and an output example for its signature."""
    example = pd.DataFrame({"text": ["a great film", "it was awful &amp; dull"]})
    return TextClassifier(), example, probabilities_example(transform, len(example))
