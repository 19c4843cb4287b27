"""The Spark driver JVM's options, and the archive of its classes that halves its start.

A Spark driver loads some ten thousand classes from about 250 jars before its first job: about 4 s
of a small command's 8 s on two cores, measured here (a session and one small job, 7.5-8.7 s
without the archive, 4.0-4.3 s with it). Java's class-data sharing (CDS) maps them from an archive
instead. The archive is made once per machine, JDK and Spark (``python -m
pipelines.runtime.class_archive``, run by ``make`` and the image build; about 30 s), kept in the
user's cache, and used by every later driver that ``get_spark`` starts. Without one, drivers start as they
always did. A driver started by ``spark-submit`` has its JVM before this code runs, and is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from pipelines.core.locations import cache_folder
from pipelines.runtime.logs import verbose

# The driver plans and schedules; rows are handled by executors and Python workers. Its optimising
# JIT compiler (C2) took a fifth of a core through a whole image stage here, and G1 grew its heap
# with the run's length (RSS +12% from 8,000 to 32,000 files; flat with the serial collector). In
# local mode the executors are that JVM too: text preprocess of 200,000 reviews took the same 30 s
# with and without these (benchmarks/README.md).
_BASE_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def options(record_classes: Path | None = None) -> str:
    """``spark.driver.extraJavaOptions`` for a driver this process starts: the compiler and collector
    above, the class archive when this machine has one (or, with ``record_classes``, a new archive
    written there at exit), and the log4j settings (quiet, or errors to the run's log file; Spark's
    own with ``--verbose``)."""
    options = _BASE_OPTIONS
    if record_classes is not None:
        options += f" -XX:ArchiveClassesAtExit={record_classes} -Xlog:cds=off -Xlog:cds+dynamic=off"
    elif (archive := archive_path()) is not None and archive.is_file():
        options += f" -XX:SharedArchiveFile={archive}"
    if verbose():  # Spark's own logging
        return options
    log_file = os.environ.get("DLFUSION_LOG_FILE")
    if log_file and os.environ.get("DLFUSION_DEBUG") != "1":  # errors into the run's log file
        settings = Path(__file__).with_name("log4j2-file.properties")
        options += f" -Ddlfusion.logfile={log_file}"
    else:  # errors only, on the console
        settings = Path(__file__).with_name("log4j2-quiet.properties")
    return options + f" -Dlog4j2.configurationFile={settings.as_uri()}"


def archive_path() -> Path | None:
    """This machine's class archive for the JDK that Spark would start and this Spark's jars (a
    name that changes with either), or None when no JDK is found."""
    import pyspark

    java_home = os.environ.get("JAVA_HOME")  # what spark-class runs, as it chooses
    java = Path(java_home, "bin", "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        return None
    java = Path(java).resolve()
    stat = java.stat()
    jars = Path(pyspark.__file__).resolve().parent / "jars"
    identity = f"{java}:{stat.st_size}:{stat.st_mtime_ns}:{pyspark.__version__}:{jars}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_folder() / "spark-driver" / f"classes-{pyspark.__version__}-{key}.jsa"
