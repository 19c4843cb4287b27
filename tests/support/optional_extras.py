"""Imports scikit-learn and pyplot if it can, as Keras does (a rank's preload in the launcher tests)."""

import importlib

FOUND = {}
for _name in ("sklearn", "matplotlib.pyplot"):
    try:
        importlib.import_module(_name)
        FOUND[_name] = True
    except ImportError:
        FOUND[_name] = False
