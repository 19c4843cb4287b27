"""How good a generator is: a Fréchet distance between real and generated images in the feature
space of a small classifier trained on the same data, and grids of samples to look at.

Not the Inception FID: Inception's ImageNet weights would have to be downloaded at run time and
mean little for 32-pixel digits; a classifier of the data itself is small, trains in seconds and
measures what matters here (do samples look like the classes). Scores are comparable within one
run (one feature space), not across runs or with published FIDs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.preprocess.transforms import class_indices


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """||mu_r - mu_f||^2 + Tr(C_r + C_f - 2 (C_r C_f)^1/2) between two (n, d) feature samples."""
    import warnings

    from scipy import linalg

    mean_real, mean_fake = real.mean(axis=0), fake.mean(axis=0)
    cov_real = np.atleast_2d(np.cov(real, rowvar=False))
    cov_fake = np.atleast_2d(np.cov(fake, rowvar=False))
    with warnings.catch_warnings():  # singular covariances (dead features) are handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root, _ = linalg.sqrtm(cov_real @ cov_fake, disp=False)
        if not np.isfinite(root).all():  # regularise, as the FID reference code does
            offset = np.eye(len(cov_real)) * 1e-6
            root = linalg.sqrtm((cov_real + offset) @ (cov_fake + offset))
    root = np.real(root)
    distance = np.sum((mean_real - mean_fake) ** 2) + np.trace(cov_real + cov_fake - 2.0 * root)
    return float(max(distance, 0.0))


def read_images(location: str | Path, transform, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` uint8 images and their labels from a split, reading only the row groups needed."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(location), format="parquet").head(limit, columns=["pixels", "label"])
    labels = class_indices(table.column("label").to_numpy(zero_copy_only=False), transform.class_names)
    return transform.to_images(table.column("pixels").to_pylist()), labels


def feature_extractor_file(catalog, run_id: str) -> Path:
    """Where a run keeps its feature space, beside its model (training writes it, evaluate reads it)."""
    return catalog.trained_model(run_id).with_name("feature_extractor.keras")


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [-1, 1], the generator's output range."""
    return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] -> uint8."""
    return np.clip(np.rint((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def train_feature_classifier(
    images: np.ndarray, labels: np.ndarray, num_classes: int, epochs: int, seed: int
):
    """Fit the small classifier (``models.gan.build_feature_classifier``) on uint8 images; return the
    model that maps images in [-1, 1] to their features."""
    import keras

    from models.gan import build_feature_classifier

    keras.utils.set_random_seed(seed)
    classifier = build_feature_classifier(images.shape[1], num_classes)
    classifier.compile(optimizer=keras.optimizers.Adam(0.002), loss="sparse_categorical_crossentropy")
    classifier.fit(to_unit_range(images), labels, epochs=epochs, batch_size=64, verbose=0)
    return keras.Model(classifier.input, classifier.get_layer("features").output, name="feature_extractor")


def features(extractor, images_unit: np.ndarray) -> np.ndarray:
    """Features of images in [-1, 1], float64 for the covariance."""
    return np.asarray(extractor.predict(images_unit, batch_size=256, verbose=0), np.float64)


def save_grid(images: np.ndarray, path: Path, title: str = "") -> None:
    """Save uint8 images (n, h, w, 3) as one square grid PNG."""
    from pipelines.track.plots import figure

    side = int(np.ceil(np.sqrt(len(images))))
    fig = figure(figsize=(side * 0.8, side * 0.8 + (0.3 if title else 0)))
    axes = fig.subplots(side, side)
    for ax, index in zip(np.ravel(axes), range(side * side), strict=True):
        ax.axis("off")
        if index < len(images):
            ax.imshow(images[index], interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
