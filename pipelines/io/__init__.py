"""Reading and writing data: every location the pipelines read or write, local or a URI, goes through
here (``filesystems``, ``atomic``, ``parquet``, ``spark_writes``; locations themselves are
``pipelines.core.locations``).

A location is a local path (``Path``, or a ``file:`` URI) or a URI of another file system (``Uri``:
``s3://``, ``s3a://``, ``hdfs://``, ``gs://``, ...). Python code reaches them with pyarrow's file
systems (``filesystem``), Spark with Hadoop's (the same URI string).

Atomic replacement, by file system (``renames_atomically``):

- local disks and shared mounts, HDFS (``hdfs://``, ``viewfs://``): write beside the target, then
  one rename. Readers see the old data set or file, or the new one, never half.
- object stores (``s3://``/``s3a://``, ``gs://``, ``abfs://``, ...), where a folder "rename" is a copy
  of every object: a data set is committed by a ``_SUCCESS`` marker written last (``COMMIT_MARKER``),
  removed first when it is replaced; ``data_files`` and ``row_group_sizes`` refuse a data set
  without it. A single file (a JSON record) is one PUT, which object stores apply atomically per
  object: readers see the old content or the new, never half.

S3 endpoints: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible server such as MinIO),
``AWS_REGION``/``AWS_DEFAULT_REGION`` and the usual credential variables are read from the environment
of the process that opens the file system, Spark's Python workers included: in local mode they inherit
the driver's environment; on a cluster set them with ``spark.executorEnv.NAME``.
"""
