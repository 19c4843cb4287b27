"""What the classifier kinds share: the training task, the served pyfunc, the test evaluation."""
