"""What a kind's training task is given and must do on every rank (``TrainingTask``), and the
plain, picklable job the driver hands the ranks (``TrainJob``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines.core.catalog import Catalog
from pipelines.core.config import PipelineConfig
from pipelines.train.loader import ShardPlan

if TYPE_CHECKING:
    import keras

    from pipelines.preprocess.transforms import Transform


@dataclass(frozen=True)
class TrainJob:
    """Everything a rank needs, as plain picklable data."""

    config: PipelineConfig
    run_id: str
    train_plan: ShardPlan
    validate: bool
    class_weight: dict[int, float] | None = None
    init_weights: str | None = None  # a logged Keras model whose weights rank 0 starts from


@dataclass
class RankContext:
    """What a kind's training task sees on one rank."""

    config: PipelineConfig
    transform: Transform
    catalog: Catalog
    run_id: str
    rank: int
    size: int
    steps_per_epoch: int
    validate: bool

    def dataset(self, split: str, **options):
        """This rank's shard of ``split`` as a tf.data set of (features, labels) batches."""
        from pipelines.train.loader import split_dataset

        train = self.config.train
        return split_dataset(
            self.catalog.split(split),
            self.transform,
            batch_size=train.batch_size,
            rank=self.rank,
            size=self.size,
            seed=train.seed,
            readers=train.reader_workers,
            **options,
        )


class TrainingTask:
    """How a kind trains on every rank; the shared loop around it streams the data, broadcasts the
    initial state, averages epoch metrics, checkpoints, resumes and logs.

    ``build`` returns a compiled Keras model whose ``fit`` does the kind's training step (its
    optimizers built, gradients averaged over ranks); a model with several optimizers lists them in
    a ``distributed_optimizers`` attribute so that broadcast and checkpoints include them all.
    """

    def build(self, ctx: RankContext) -> keras.Model:
        raise NotImplementedError

    def callbacks(self, ctx: RankContext) -> list:
        """The kind's callbacks, run on every rank after epoch metrics are averaged."""
        return []

    def rank0_callbacks(self, ctx: RankContext) -> list:
        """Callbacks on rank 0 only, before the checkpoint and MLflow logging (e.g. samples, scores)."""
        return []

    def export(self, ctx: RankContext, model: keras.Model) -> keras.Model:
        """The plain Keras model to save for serving (no Horovod inside)."""
        raise NotImplementedError
