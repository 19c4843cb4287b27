"""A logged model's metrics on the test split, logged to its training run."""
