"""Imports scikit-learn if it can, as Keras does (a rank's preload in the launcher tests)."""

try:
    import sklearn  # noqa: F401

    FOUND = True
except ImportError:
    FOUND = False
