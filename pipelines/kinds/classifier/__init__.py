"""What the classifier kinds share: the training task, the served pyfunc, the test evaluation."""

# A classifier must beat always answering the train split's most frequent class, on macro-F1 (which
# that answer cannot inflate on imbalanced labels, as it does accuracy).
MAJORITY_BASELINE = ("test_macro_f1", "test_majority_macro_f1")
