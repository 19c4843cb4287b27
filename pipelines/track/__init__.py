"""Every MLflow call: runs, metrics, the logged pyfunc model, the registry, plots, the server process."""
