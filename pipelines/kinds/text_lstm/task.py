"""The sentiment classifier's training task on every rank: the LSTM (or another
``model.architecture``) over the fitted vocabulary.

Apart from the served pyfunc (``model``), so that the ranks never import MLflow.
"""

from __future__ import annotations

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
