"""dlfusion: raw data -> Spark -> Parquet -> Petastorm -> Horovod ranks -> MLflow model.

The packages, top to bottom; each imports only packages below it (``setup.cfg``'s import
contracts, checked by ``make lint``):

- ``cli``: the ``dlfusion`` command.
- ``pipeline``: the stages as one run: config files, freshness (skip what is unchanged), the runner.
- ``evaluate``, ``promote``, ``score``: a logged model's test metrics, the champion gate, new data
  scored.
- ``train``: the driver, the launchers, the loop every rank runs, the loader that streams splits.
- ``track``: every MLflow call: runs and metrics, the logged pyfunc, the registry, plots.
- ``ingest``, ``preprocess``: what the kinds' ingest and preprocess parts share: accounted writes,
  splits, transforms.
- ``runtime``: the Spark session and its daemon, local ranks, processes, progress, locks, logs.
- ``io``: file systems and listings, atomic files, Parquet data sets, Spark writes.
- ``core``: errors, locations, the workdir ``Catalog``, the shared config, the stage table.

``kinds`` holds the kind registry and contract, and the built-in kinds, which are plug-ins: shared
packages never import them.
"""
