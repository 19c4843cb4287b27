"""The GAN on every rank: one custom Keras 3 training step for both networks, data-parallel.

Each step updates the discriminator on a real and a generated batch, then the generator; each
network's gradients are averaged over the ranks with one grouped allreduce (its optimizer is
``horovod_keras.distributed``). Noise is drawn statelessly from (seed, rank, step): ranks draw
different noise, and a run (or a resumed one: the step is the optimizer's counter) is reproducible.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pipelines.io import atomic
from pipelines.kinds.image_gan import quality
from pipelines.track import runs
from pipelines.train import horovod_keras as hk
from pipelines.train.task import RankContext, TrainingTask

METRICS = ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy")


class Gan(keras.Model):
    """Generator + discriminator; ``fit`` on (uint8 images, labels) batches trains both."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int, noise_seed: int):
        super().__init__(name="gan")
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim, self.noise_seed = latent_dim, noise_seed
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRICS}
        self.loss_of = keras.losses.BinaryCrossentropy(from_logits=True)
        self.built = True  # both networks are built; the pair has no weights of its own

    def compile(self, d_optimizer, g_optimizer):
        super().compile(jit_compile=False)  # Horovod's ops have no XLA kernels here
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.distributed_optimizers = [d_optimizer, g_optimizer]
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, latent, training=False):
        return self.generator(latent, training=training)

    def _noise(self, batch, optimizer, salt: int):
        # Stateless: the same (seed, rank, step) always gives the same noise, on any machine.
        step = tf.cast(optimizer.iterations, tf.int64)
        seed = tf.stack([tf.constant(self.noise_seed, tf.int64), step * 2 + salt])
        return tf.random.stateless_normal((batch, self.latent_dim), seed=seed)

    def train_step(self, data):
        images = data[0]
        real = tf.cast(images, tf.float32) / 127.5 - 1.0
        batch = tf.shape(real)[0]
        generator, discriminator = self.generator, self.discriminator

        with tf.GradientTape() as tape:
            fake = generator(self._noise(batch, self.d_optimizer, 0), training=True)
            real_logits = discriminator(real, training=True)
            fake_logits = discriminator(fake, training=True)
            d_loss = self.loss_of(tf.ones_like(real_logits), real_logits) + self.loss_of(
                tf.zeros_like(fake_logits), fake_logits
            )
        grads = tape.gradient(d_loss, discriminator.trainable_variables)
        self.d_optimizer.apply(grads, discriminator.trainable_variables)

        with tf.GradientTape() as tape:
            logits = discriminator(
                generator(self._noise(batch, self.g_optimizer, 1), training=True), training=True
            )
            g_loss = self.loss_of(tf.ones_like(logits), logits)
        grads = tape.gradient(g_loss, generator.trainable_variables)
        self.g_optimizer.apply(grads, generator.trainable_variables)

        self.trackers["d_loss"].update_state(d_loss)
        self.trackers["g_loss"].update_state(g_loss)
        self.trackers["d_real_accuracy"].update_state(tf.cast(real_logits > 0, tf.float32))
        self.trackers["d_fake_accuracy"].update_state(tf.cast(fake_logits < 0, tf.float32))
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def build_gan(ctx: RankContext) -> Gan:
    from models.gan import build_discriminator, build_generator

    model, size = ctx.config.model, ctx.transform.image_size
    gan = Gan(
        build_generator(model.latent_dim, size, model.generator_filters),
        build_discriminator(size, model.discriminator_filters, model.dropout),
        model.latent_dim,
        noise_seed=ctx.config.train.seed * 100_003 + ctx.rank,
    )
    adam = hk.distributed(keras.optimizers.Adam)
    rate = ctx.config.train.learning_rate
    gan.compile(adam(learning_rate=rate, beta_1=model.beta_1), adam(learning_rate=rate, beta_1=model.beta_1))
    return gan


class GanTask(TrainingTask):
    def build(self, ctx: RankContext) -> keras.Model:
        return build_gan(ctx)

    def callbacks(self, ctx: RankContext) -> list:
        return [hk.AverageModelState()]  # the generator's batch-norm statistics

    def rank0_callbacks(self, ctx: RankContext) -> list:
        return [GanMonitor(ctx)]

    def export(self, ctx: RankContext, model: keras.Model) -> keras.Model:
        from models.gan import build_generator

        settings = ctx.config.model
        export = build_generator(settings.latent_dim, ctx.transform.image_size, settings.generator_filters)
        export.set_weights(model.generator.get_weights())
        return export


class GanMonitor(keras.callbacks.Callback):
    """Rank 0: a quality score per epoch (``frechet_distance``, into the epoch's logs) and a grid of
    samples from a fixed latent batch every ``monitor.sample_every`` epochs (an MLflow artifact)."""

    def __init__(self, ctx: RankContext):
        super().__init__()
        self.ctx, self.settings = ctx, ctx.config.monitor
        rng = np.random.default_rng(ctx.config.train.seed)
        latent_dim = ctx.config.model.latent_dim
        self.grid_latent = rng.standard_normal((self.settings.grid**2, latent_dim)).astype(np.float32)
        self.quality_latent = rng.standard_normal((self.settings.quality_samples, latent_dim)).astype(
            np.float32
        )

    def on_train_begin(self, logs=None):
        ctx = self.ctx
        images, labels = quality.read_images(
            ctx.catalog.split("train"), ctx.transform, self.settings.quality_samples
        )
        path = quality.feature_extractor_file(ctx.catalog, ctx.run_id)
        if path.is_file():  # resumed: keep the run's feature space, or scores would not compare
            self.extractor = keras.models.load_model(path, compile=False)
        else:
            self.extractor = quality.train_feature_classifier(
                images,
                labels,
                len(ctx.transform.class_names),
                self.settings.feature_epochs,
                ctx.config.train.seed,
            )
            atomic.write_atomically(path, self.extractor.save)
            runs.log_artifact_or_warn(ctx.config.tracking_uri, ctx.run_id, path, "quality")
        self.real_features = quality.features(self.extractor, quality.to_unit_range(images))

    def on_epoch_end(self, epoch, logs=None):
        generator = self.model.generator
        fake = generator.predict(self.quality_latent, batch_size=256, verbose=0)
        score = quality.frechet_distance(self.real_features, quality.features(self.extractor, fake))
        if logs is not None:
            logs["frechet_distance"] = score
        last = epoch + 1 == self.ctx.config.train.epochs
        if (epoch + 1) % self.settings.sample_every == 0 or last:
            grid = quality.to_uint8(generator.predict(self.grid_latent, verbose=0))
            run_folder = self.ctx.catalog.trained_model(self.ctx.run_id).parent
            path = run_folder / f"samples_epoch_{epoch + 1:03d}.png"
            quality.save_grid(grid, path, f"epoch {epoch + 1}, Fréchet distance {score:.2f}")
            runs.log_artifact_or_warn(self.ctx.config.tracking_uri, self.ctx.run_id, path, "samples")
