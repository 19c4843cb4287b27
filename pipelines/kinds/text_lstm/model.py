"""The sentiment classifier's served pyfunc (raw text in); the training task is ``task``."""

from __future__ import annotations

import pandas as pd

from pipelines.kinds.classifier.serving import KerasClassifier, probabilities_example


class TextClassifier(KerasClassifier):
    """Takes raw text: a DataFrame with a ``text`` column (or a list of strings)."""

    def features(self, model_input):
        texts = model_input["text"] if isinstance(model_input, pd.DataFrame) else model_input
        return self.transform.encode(list(texts))


def served_model(transform, model_config):
    """The pyfunc, an input example and an output example for its signature."""
    example = pd.DataFrame({"text": ["a great film", "it was awful &amp; dull"]})
    return TextClassifier(), example, probabilities_example(transform, len(example))
