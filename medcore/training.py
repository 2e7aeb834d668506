"""DenseNet121 training: model building, fitting with Keras callbacks, atomic model saving."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcore.config import Config, Profile
from medcore.datasets import make_dataset
from medcore.jsonio import write_json
from medcore.layout import ModelLayout

__all__ = ["build_model", "train_model", "configure_threads", "versions"]

log = logging.getLogger(__name__)

# ImageNet channel statistics (DenseNet's "torch" preprocessing), inside the model so a saved
# model takes raw 0-255 pixels and nobody downstream has to remember the recipe.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def configure_threads() -> int | None:
    """Apply `MEDCORE_THREADS` to TensorFlow's intra-op pool before any op runs; return it."""
    import tensorflow as tf

    threads = os.environ.get("MEDCORE_THREADS")
    if not threads:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    except RuntimeError:
        pass  # already initialised in this process (e.g. an in-process Airflow test): keep what it has
    return int(threads)


def build_model(profile: Profile, seed: int):
    """Return a functional DenseNet121 binary classifier emitting one logit.

    Args:
        profile: image size, augmentation and learning rate.
        seed: seeds the augmentation layers.
    Returns:
        A compiled `keras.Model` whose layer `relu` is DenseNet121's final activation.
    """
    import keras

    size = profile.image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    aug = profile.augmentation
    if aug.rotation:
        x = keras.layers.RandomRotation(aug.rotation, fill_mode="constant", seed=seed, name="aug_rotation")(x)
    if aug.zoom:
        x = keras.layers.RandomZoom(aug.zoom, fill_mode="constant", seed=seed, name="aug_zoom")(x)
    if aug.contrast:
        x = keras.layers.RandomContrast(aug.contrast, value_range=(0, 255), seed=seed, name="aug_contrast")(x)
    if aug.horizontal_flip:
        x = keras.layers.RandomFlip("horizontal", seed=seed, name="aug_flip")(x)
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(x)
    x = keras.layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="imagenet_norm")(x)
    # input_tensor makes DenseNet's layers part of this graph, so `relu` is reachable by name.
    backbone = keras.applications.DenseNet121(include_top=False, weights=None, input_tensor=x, pooling="avg")
    x = keras.layers.Dropout(0.2, seed=seed, name="dropout")(backbone.output)
    logits = keras.layers.Dense(1, name="logit", dtype="float32")(x)
    model = keras.Model(inputs, logits, name="densenet121_binary")
    model.compile(
        optimizer=keras.optimizers.Adam(profile.learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.AUC(from_logits=True, name="auc"), keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
        run_eagerly=profile.execution == "eager",
    )
    return model


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Balanced class weights, so a 3:1 set does not train a model that always says "positive"."""
    counts = np.bincount(labels.astype(int), minlength=2).astype(float)
    return {c: float(len(labels) / (2.0 * counts[c])) for c in (0, 1) if counts[c] > 0}


def versions() -> dict[str, str]:
    """Library versions that decide whether a result can be reproduced."""
    import keras
    import sklearn
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "scikit-learn": sklearn.__version__}


class _ProgressLog:
    """Builds a Keras callback that writes one readable line per epoch to the task log."""

    @staticmethod
    def make(total_epochs: int):
        import keras

        class ProgressLog(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                shown = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()) if isinstance(v, (int, float)))
                log.info("epoch %d/%d %.1fs %s", epoch + 1, total_epochs, time.perf_counter() - self._start, shown)

        return ProgressLog()


def train_model(config: Config, profile: Profile, split: pd.DataFrame, paths: ModelLayout,
                epochs: int | None = None) -> dict[str, Any]:
    """Fit a fresh DenseNet121 on the train split, select on val, save `model.keras`; return the record."""
    import keras
    import tensorflow as tf

    threads = configure_threads()
    keras.utils.set_random_seed(config.seed)
    epochs = epochs or profile.epochs
    train = split[split["split"] == "train"]
    val = split[split["split"] == "val"]
    train_data = make_dataset(train, profile, training=True, seed=config.seed)
    val_data = make_dataset(val, profile, training=False, seed=config.seed)

    model = build_model(profile, config.seed)
    paths.root.mkdir(parents=True, exist_ok=True)
    stopper = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=profile.patience,
                                            restore_best_weights=True, verbose=0)
    callbacks = [
        stopper,
        keras.callbacks.BackupAndRestore(str(paths.backup_dir)),  # a retried task resumes, not restarts
        keras.callbacks.CSVLogger(str(paths.history_csv)),
        _ProgressLog.make(epochs),
    ]
    start = time.perf_counter()
    history = model.fit(train_data, validation_data=val_data, epochs=epochs, callbacks=callbacks,
                        class_weight=class_weights(train["label"].to_numpy()), verbose=0)
    wall = time.perf_counter() - start
    epochs_run = len(history.history.get("loss", []))

    tmp = paths.model.with_name(f".{paths.model.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, paths.model)

    best_val_auc = max(history.history.get("val_auc", [float("nan")]))
    record = {
        "condition": paths.condition,
        "profile": profile.name,
        "image_size": profile.image_size,
        "epochs_planned": epochs,
        "epochs_run": epochs_run,
        "early_stopped": bool(stopper.stopped_epoch),
        "best_val_auc": best_val_auc,
        "wall_seconds": wall,
        "images_per_second": len(train) * epochs_run / wall if wall > 0 else None,
        "train_images": len(train),
        "val_images": len(val),
        "seed": config.seed,
        "threads": threads,
        "execution": profile.execution,
        "precision": keras.mixed_precision.global_policy().name,
        "device": "CPU" if not tf.config.list_physical_devices("GPU") else "GPU",
        "versions": versions(),
        "model_path": paths.model,
        "split_manifest": paths.split_csv,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
    }
    write_json(paths.model_contract, {
        "architecture": "DenseNet121", "input_shape": [profile.image_size, profile.image_size, 3],
        "input_range": [0, 255], "preprocessing": "inside the model (rescale, ImageNet normalisation)",
        "output": "one logit; sigmoid gives P(positive)", "gradcam_layer": config.gradcam_layer,
        "seed": config.seed, "versions": record["versions"],
    })
    return record
