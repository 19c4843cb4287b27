"""The LSTM sentiment classifier: Embedding -> LSTM -> sigmoid (two classes) or softmax."""

from __future__ import annotations


def build_lstm(
    max_len: int, vocab_size: int, num_classes: int, embedding_dim: int = 128, lstm_units: int = 64
):
    """Build the classifier over int32 token ids of length ``max_len`` (0 = padding, masked).

    Two classes get one sigmoid unit (the probability of class 1); more get a softmax.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(max_len,), dtype="int32", name="tokens")
    x = layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(inputs)
    x = layers.LSTM(lstm_units, name="lstm")(x)
    if num_classes == 2:
        outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    else:
        outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="lstm_classifier")
