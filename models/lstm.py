"""The text classifiers: token ids -> Embedding -> an LSTM, a bidirectional LSTM, a 1-D convolution
or a bag of embeddings -> sigmoid (two classes) or softmax."""

from __future__ import annotations

ARCHITECTURES = ("lstm", "bilstm", "cnn", "bag")


def build_lstm(
    max_len: int,
    vocab_size: int,
    num_classes: int,
    embedding_dim: int = 128,
    lstm_units: int = 64,
    architecture: str = "lstm",
    embeddings=None,
    train_embeddings: bool = True,
):
    """Build the classifier over int32 token ids of length ``max_len`` (0 = padding, masked).

    ``architecture``: ``lstm`` (the seed), ``bilstm`` (both directions), ``cnn`` (convolutions of 5
    tokens, max over the text) or ``bag`` (the mean of the embeddings, then a dense layer);
    ``lstm_units`` sizes the layer after the embedding. ``embeddings`` (vocab_size x embedding_dim),
    when given, starts the embedding from those vectors, frozen unless ``train_embeddings``.
    Two classes get one sigmoid unit (the probability of class 1); more get a softmax.
    """
    import keras
    from keras import layers

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; one of {', '.join(ARCHITECTURES)}")
    inputs = keras.Input(shape=(max_len,), dtype="int32", name="tokens")
    initial = keras.initializers.Constant(embeddings) if embeddings is not None else "uniform"
    x = layers.Embedding(
        vocab_size,
        embedding_dim,
        embeddings_initializer=initial,
        trainable=train_embeddings or embeddings is None,
        mask_zero=architecture != "cnn",  # convolutions take no mask; they see the padding
        name="embedding",
    )(inputs)
    if architecture == "lstm":
        x = layers.LSTM(lstm_units, name="lstm")(x)
    elif architecture == "bilstm":
        x = layers.Bidirectional(layers.LSTM(lstm_units), name="bilstm")(x)
    elif architecture == "cnn":
        x = layers.Conv1D(lstm_units, 5, padding="same", activation="relu", name="conv")(x)
        x = layers.GlobalMaxPooling1D(name="max_over_text")(x)
    else:
        x = layers.GlobalAveragePooling1D(name="mean_embedding")(x)
        x = layers.Dense(lstm_units, activation="relu", name="dense")(x)
    if num_classes == 2:
        outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    else:
        outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{architecture}_classifier")
