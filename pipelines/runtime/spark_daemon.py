"""Spark's Python worker daemon (``pyspark.daemon``) with one fix, set as ``spark.python.daemon.module``.

Before every task Spark's Python worker calls ``importlib.invalidate_caches()`` (SPARK-54744, fixed
after Spark 4.0). On Python 3.10 and 3.11 that re-reads the directory of every zip on the path
(CPython #103200, fixed in 3.12), and the worker's path starts with pyspark.zip and py4j's zip:
about 0.25 s of CPU per task on each core, measured here, which made small tasks cost more than
their work. Those zips do not change while a worker lives, so zip importers keep their directory,
as they did before Python 3.10.
"""

import sys
import zipimport

if sys.version_info < (3, 12):
    zipimport.zipimporter.invalidate_caches = lambda self: None

from pyspark import daemon  # noqa: E402

if __name__ == "__main__":
    daemon.manager()
