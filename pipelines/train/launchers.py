"""Starting the ranks: the local launcher's processes (kept for the stages of one run, ``RankPool``)
or Spark tasks, and each failure turned into one line naming its rank.
"""

from __future__ import annotations

import os
import re
import signal
import time

from pipelines.core.catalog import Catalog
from pipelines.core.config import SparkConfig
from pipelines.core.errors import TrainingError
from pipelines.runtime import local_ranks
from pipelines.train.rank_loop import train_worker
from pipelines.train.task import TrainJob


def _rank_environment(train) -> dict[str, str]:
    return {
        # A stalled rank turns into a failure after stall_timeout_s instead of hanging forever.
        "HOROVOD_STALL_CHECK_TIME_SECONDS": str(max(5, train.stall_timeout_s // 4)),
        "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": str(train.stall_timeout_s),
        "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # A tracking server outage must cost seconds per epoch, not stall the ranks for minutes.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # an integer to MLflow
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }


class RankPool:
    """The local launcher's ranks for the stages of one run: started when a stage first asks for
    them, kept for the next. Training asks before it opens the MLflow run, so that the ranks'
    imports (TensorFlow, 3-4 s) overlap it; evaluate and promote then score the test split on
    processes that have TensorFlow already. The Spark launcher has none (its ranks are Spark
    tasks, per launch).

    Use as a context manager: leaving it ends the ranks it started.
    """

    def __init__(self, train) -> None:
        self._train = train
        self._ranks: local_ranks.LocalRanks | None = None

    def get(self) -> local_ranks.LocalRanks | None:
        """The ranks, started at the first call; None for the Spark launcher."""
        if self._ranks is None and self._train.launcher == "local":
            preload = ("pipelines.train.rank_loop", "horovod.tensorflow", "keras")
            env = _rank_environment(self._train)
            self._ranks = local_ranks.LocalRanks(self._train.num_proc, env, preload)
        return self._ranks

    def for_scoring(self, spark: SparkConfig) -> local_ranks.LocalRanks | None:
        """The ranks to score a split on instead of Spark tasks: when Spark's tasks would run on this
        machine too (a local master), these processes have TensorFlow already; else None."""
        from pipelines.runtime.spark import runs_locally

        return self.get() if runs_locally(spark) else None

    def __enter__(self) -> RankPool:
        return self

    def __exit__(self, *exc) -> None:
        if self._ranks is not None:
            self._ranks.__exit__(*exc)
            self._ranks = None


def launch(job: TrainJob, ranks: local_ranks.LocalRanks | None) -> list[dict]:
    """Run ``train_worker`` on ``train.num_proc`` ranks with the configured launcher: the local
    launcher's ``ranks``, started ahead (``RankPool``), or Spark tasks (``ranks`` is None).

    Raises:
        TrainingError: with the first failing rank's own exception.
    """
    train = job.config.train
    started = time.time()
    try:
        if train.launcher == "spark":
            import horovod.spark

            from pipelines.runtime.spark import get_spark

            get_spark(job.config.spark)  # horovod.spark.run runs on the active SparkContext

            try:
                results = horovod.spark.run(
                    train_worker,
                    args=(job,),
                    num_proc=train.num_proc,
                    start_timeout=train.start_timeout_s,
                    env={**os.environ, **_rank_environment(train)},
                    verbose=0,
                )
            except Exception:  # ranks that did start wait for the others: end their tasks
                get_spark(job.config.spark).sparkContext.cancelAllJobs()
                raise
        else:
            results = ranks.run(train_worker, (job,))
    except Exception as err:
        # A rank killed from outside first (the others then fail on its broken connection), then a
        # rank's own exception, then a rank that aborted (Gloo aborts a rank whose peer is gone),
        # then what the launcher said.
        killed = _killed_rank(err)
        if killed is not None and not _aborted(err):
            raise killed from err
        raise _first_rank_error(job, started) or killed or _launcher_error(err, train) from err
    return sorted(results, key=lambda result: result["rank"])


def _exited_rank(err: Exception) -> tuple[int, int] | None:
    """(rank, exit code) of the rank the local launcher saw exit first; of those seen at once, one
    that did not abort (Gloo aborts a rank whose peer is gone: the peer is the cause)."""
    if not isinstance(err, local_ranks.RankExited):
        return None
    aborts = (-signal.SIGABRT, 128 + signal.SIGABRT)
    return next((exit for exit in err.exits if exit[1] not in aborts), err.exits[0])


def _aborted(err: Exception) -> bool:
    """Whether the first rank to exit ended on SIGABRT (-6, or 134 from a shell)."""
    exited = _exited_rank(err)
    return exited is not None and exited[1] in (-signal.SIGABRT, 128 + signal.SIGABRT)


def _killed_rank(err: Exception) -> TrainingError | None:
    """The rank a signal killed (exit code -N, or 128 + N from a shell), naming the signal."""
    exited = _exited_rank(err)
    if exited is None:
        return None
    rank, code = exited
    signum = -code if code < 0 else code - 128 if code > 128 else 0
    if signum not in signal.valid_signals():
        return None
    return TrainingError(rank, f"the process was killed by {signal.Signals(signum).name} (exit code {code})")


def _launcher_error(err: Exception, train) -> TrainingError:
    """The launcher's own report in one line: which rank exited and how, or that the ranks never all
    started."""
    text = str(err)
    if re.search(r"Timed out waiting for .*tasks to start", text):
        return TrainingError(
            -1,
            f"not all {train.num_proc} ranks' Spark tasks started and registered within "
            f"train.start_timeout_s={train.start_timeout_s} s: the cluster has fewer free task slots "
            "than train.num_proc (one per rank)",
        )
    exited = _exited_rank(err)
    if exited is not None:
        return TrainingError(exited[0], f"the process exited with code {exited[1]}")
    return TrainingError(-1, text.strip().splitlines()[0] if text.strip() else type(err).__name__)


def _first_rank_error(job: TrainJob, since: float) -> TrainingError | None:
    folder = Catalog.for_workdir(job.config.workdir).rank_errors(job.run_id)
    reports = [p for p in folder.glob("rank-*.txt") if p.stat().st_mtime >= since - 1]
    if not reports:
        return None
    first = min(reports, key=lambda p: p.stat().st_mtime)
    return TrainingError(int(first.stem.split("-")[1]), first.read_text().splitlines()[0])
