"""The sentiment classifier's model: the LSTM on every rank, and the served pyfunc (raw text in)."""

from __future__ import annotations

import pandas as pd

from pipelines.kinds.classifier.serving import KerasClassifier, probabilities_example
from pipelines.kinds.classifier.task import ClassifierTask


class LstmTask(ClassifierTask):
    def build_model(self, config, transform):
        from models.lstm import build_lstm

        return build_lstm(
            transform.max_len,
            len(transform.vocabulary),
            len(transform.class_names),
            embedding_dim=config.model.embedding_dim,
            lstm_units=config.model.lstm_units,
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
