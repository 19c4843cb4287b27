"""Image augmentation as Keras preprocessing layers: random in training, the identity at inference."""

from __future__ import annotations


def build_augmentation(
    flip: bool = False, crop: float = 0.0, rotation: float = 0.0, contrast: float = 0.0, seed: int = 0
):
    """The layers for the augmentations asked for, as one ``keras.Sequential``, or None for none.

    ``flip``: horizontal flips; ``crop``: shifts of up to this fraction of the side with reflected
    edges (pad-and-crop); ``rotation``: rotations of up to this fraction of a full turn;
    ``contrast``: brightness and contrast changed by up to this fraction. Inputs and outputs are
    pixels in 0..255. Each layer draws from its own generator seeded from ``seed``: the same seed
    gives the same sequence, and each call (each step) draws anew.
    """
    from keras import Sequential, layers

    chosen = []
    if flip:
        chosen.append(layers.RandomFlip("horizontal", seed=seed))
    if crop:
        chosen.append(layers.RandomTranslation(crop, crop, fill_mode="reflect", seed=seed + 1))
    if rotation:
        chosen.append(layers.RandomRotation(rotation, fill_mode="reflect", seed=seed + 2))
    if contrast:
        chosen.append(layers.RandomBrightness(contrast, value_range=(0, 255), seed=seed + 3))
        chosen.append(layers.RandomContrast(contrast, value_range=(0, 255), seed=seed + 4))
    return Sequential(chosen, name="augment") if chosen else None
