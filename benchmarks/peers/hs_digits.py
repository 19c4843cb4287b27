# Verbatim copy of the shared peer script peers/hs_digits.py (on the development machines:
# /work/shared/peers/hs_digits.py, with its build recipe in /work/shared/peers/README.md), kept here
# so that benchmarks/fit_vs_peer.py does not depend on the shared folder at run time. It runs in the
# peer's own legacy venv (TF 2.13 / Keras 2, horovod[spark] 0.28.1), not in .venv. Not ours to
# restyle: ruff check and ruff format skip it (the two lines below).
# ruff: noqa
# fmt: off
"""Anchor HS: Horovod-on-Spark KerasEstimator on the digits task, timed end to end.

Runs in a legacy environment (TF 2.13 / Keras 2, pyspark 3.5, pyarrow 10,
petastorm 0.12.1, horovod[spark] 0.28.1) because the estimator is broken on
Keras 3. Same data and model as dlfusion's demo: sklearn digits upscaled to
32x32 RGB uint8, the seed's CNN, 2 Horovod ranks, batch 64, EPOCHS epochs.
Prints one JSON line: fit seconds, test accuracy, rows.
Usage: python hs_digits.py STORE_DIR [EPOCHS]
"""
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402


def digits_rgb32():
    d = load_digits()
    imgs = []
    for pix in d.images:
        arr = (pix / 16.0 * 255).astype(np.uint8)
        im = Image.fromarray(arr, "L").resize((32, 32), Image.BILINEAR).convert("RGB")
        imgs.append(np.asarray(im))
    return np.stack(imgs), d.target.astype(np.int64)


def main(store_dir, epochs):
    import tensorflow as tf
    from pyspark.sql import SparkSession
    import horovod.spark.keras as hvd_keras
    from horovod.spark.common.store import LocalStore

    x, y = digits_rgb32()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    cut = int(0.8 * len(y))
    tr, te = order[:cut], order[cut:]
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "4g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")

    def frame(idx):
        onehot = np.eye(10, dtype=np.float32)
        rows = [(x[i].reshape(-1).astype(np.float32).tolist(), onehot[y[i]].tolist(), int(y[i])) for i in idx]
        return spark.createDataFrame(rows, ["features", "label_vec", "label"])

    train_df, test_df = frame(tr), frame(te)
    k = tf.keras
    model = k.Sequential([
        k.layers.Reshape((32, 32, 3), input_shape=(3072,)),
        k.layers.Rescaling(1.0 / 255),
        k.layers.Conv2D(32, 3, activation="relu", padding="same"), k.layers.MaxPooling2D(),
        k.layers.Conv2D(64, 3, activation="relu", padding="same"), k.layers.MaxPooling2D(),
        k.layers.Conv2D(128, 3, activation="relu", padding="same"), k.layers.MaxPooling2D(),
        k.layers.Flatten(), k.layers.Dense(128, activation="relu"), k.layers.Dense(10, activation="softmax"),
    ])
    est = hvd_keras.KerasEstimator(
        num_proc=2, store=LocalStore(store_dir), model=model,
        optimizer=k.optimizers.Adam(1e-3), loss="categorical_crossentropy",
        metrics=["accuracy"], feature_cols=["features"], label_cols=["label_vec"],
        batch_size=64, epochs=epochs, validation=0.1, verbose=0)
    t0 = time.time()
    fitted = est.fit(train_df.drop("label"))
    fit_s = time.time() - t0
    pred = fitted.setOutputCols(["prob"]).transform(test_df.drop("label_vec")).select("label", "prob").collect()
    acc = float(np.mean([int(np.argmax(r.prob)) == r.label for r in pred]))
    print(json.dumps({"anchor": "horovod.spark.keras.KerasEstimator", "epochs": epochs, "num_proc": 2,
                      "train_rows": len(tr), "test_rows": len(te), "fit_seconds": round(fit_s, 1),
                      "test_accuracy": round(acc, 4)}))
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10)
