"""DenseNet121 training: model building, weight sources, fitting with Keras callbacks, atomic saving.

A retried task resumes from the last finished epoch (Keras BackupAndRestore), and the model file
is only ever replaced whole, so a crash never leaves half a model where a good one was.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcore.config import Config, Profile, Progressive
from medcore.data.datasets import make_dataset
from medcore.errors import MedcoreError
from medcore.jsonio import atomic_write_text, write_json
from medcore.layout import ModelLayout
from medcore.model import compute
from medcore.model.contract import save_model_with_contract, training_contract
from medcore.model.warmstart import WarmStartPlan, reestimate_batch_norm, rewarm_callback, shrink_and_perturb

__all__ = [
    "build_model",
    "train_model",
    "save_model_with_contract",
    "configure_threads",
    "versions",
    "IMAGENET_WEIGHTS_FILE",
]

log = logging.getLogger(__name__)

# ImageNet channel statistics (DenseNet's "torch" preprocessing), inside the model so a saved
# model takes raw 0-255 pixels and nobody downstream has to remember the recipe.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_WEIGHTS_FILE = "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Weight sources copied in from a saved model after building; what the record says when there is none yet.
WARM_STARTS = {"champion": "none (no champion yet)", "shared": "none (no shared backbone yet; run `medcore pretrain`)"}


def configure_threads(profile: Profile) -> dict[str, int | None]:
    """Size TensorFlow's thread pools from the profile, else `MEDCORE_THREADS`; return what applies.

    Two training tasks sharing two cores must not each start two threads: the DAG gives each task
    as many `training` pool slots as its profile's `cores`, and the environment says how many
    threads that is (medcore.model.compute).
    """
    return compute.configure_threads(profile.intra_op_threads, profile.inter_op_threads)


cpu_supports_bf16 = compute.cpu_supports_bf16


@contextlib.contextmanager
def precision_policy(profile: Profile) -> Iterator[dict[str, str]]:
    """Train in the precision chosen for the profile on this CPU (model.compute); yield the choice and why."""
    choice = compute.choose_precision(profile.precision)
    if choice["mode"] != choice["requested"] and choice["requested"] != "auto":
        log.warning("profile %s: %s; using %s", profile.name, choice["reason"], choice["mode"])
    with compute.precision_mode(choice["mode"]) as policy:
        yield {**choice, "keras_policy": policy}


def _backbone(x, weights: str):
    import keras

    if weights in ("none", "champion", "shared"):  # a champion's or the shared backbone's weights are copied in later
        return keras.applications.DenseNet121(include_top=False, weights=None, input_tensor=x, pooling="avg")
    if weights == "imagenet":
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / IMAGENET_WEIGHTS_FILE
        try:
            return keras.applications.DenseNet121(include_top=False, weights="imagenet", input_tensor=x, pooling="avg")
        except Exception as exc:  # no network here: Keras' download fails with a URL or HTTP error
            raise MedcoreError(
                f"ImageNet weights unavailable ({type(exc).__name__}); place {IMAGENET_WEIGHTS_FILE} at {cache} "
                "or set the profile's weights to a local file or none"
            ) from exc
    try:
        return keras.applications.DenseNet121(include_top=False, weights=weights, input_tensor=x, pooling="avg")
    except (ValueError, OSError) as exc:
        raise MedcoreError(f"{weights}: not DenseNet121 (include_top=False) weights: {exc}") from exc


def build_network(profile: Profile, seed: int, outputs: int = 1, head: str = "logit"):
    """Return an uncompiled DenseNet121 emitting `outputs` float32 logits from a Dense layer named `head`.

    Augmentation, rescaling and ImageNet normalisation are layers of the model, so a saved model
    takes raw 0-255 pixels. Layer `relu` is DenseNet121's final activation (the Grad-CAM target).
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
    backbone = _backbone(x, profile.weights)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = profile.batch_norm_momentum
    x = keras.layers.Dropout(0.2, seed=seed, name="dropout")(backbone.output)
    logits = keras.layers.Dense(outputs, name=head, dtype="float32")(x)  # float32 logits even under bf16
    return keras.Model(inputs, logits, name="densenet121_binary" if outputs == 1 else f"densenet121_{outputs}_tasks")


def build_model(profile: Profile, seed: int):
    """Return a compiled, functional DenseNet121 binary classifier emitting one float32 logit.

    Args:
        profile: image size, augmentation, weight source and learning rate.
        seed: seeds the augmentation and dropout layers.
    Returns:
        A `keras.Model` whose layer `relu` is DenseNet121's final activation (the Grad-CAM target).
    """
    model = build_network(profile, seed)
    _compile(model, profile, profile.learning_rate)
    return model


def _compile(model, profile: Profile, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.AUC(from_logits=True, name="auc"),
            keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
        ],
        run_eagerly=profile.execution == "eager",
    )


def _set_backbone_trainable(model, trainable: bool) -> None:
    # Frozen BatchNorm layers also run in inference mode in Keras 3, which is what fine-tuning needs.
    head = {"dropout", "logit"}
    for layer in model.layers:
        if layer.name not in head and layer.weights:
            layer.trainable = trainable


def warm_start_from(model, source: Path) -> int:
    """Copy weights from the saved model at `source` into `model`, layer by name; return layers copied.

    Convolution weights do not depend on the image size, so a champion trained at another size
    still starts the new model; layers whose shapes differ keep their fresh initialisation.
    """
    import keras

    from medcore.assess.predict import check_model_archive

    check_model_archive(source)
    saved = keras.models.load_model(source, safe_mode=True, compile=False)
    theirs = {layer.name: layer for layer in saved.layers}
    copied = 0
    for layer in model.layers:
        other = theirs.get(layer.name)
        if other is None or not layer.weights:
            continue
        weights = other.get_weights()
        if [w.shape for w in weights] == [tuple(v.shape) for v in layer.weights]:
            layer.set_weights(weights)
            copied += 1
    if not copied:
        raise MedcoreError(f"{source}: no layer of the saved model matches this model; cannot warm start")
    return copied


def cosine_learning_rate(base: float, epoch: int, first: int, last: int, floor: float = 0.05) -> float:
    """The learning rate for `epoch` of a phase running epochs [first, last): cosine from base to floor*base."""
    span = max(last - first - 1, 1)
    progress = min(max((epoch - first) / span, 0.0), 1.0)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _schedule_callbacks(profile: Profile, learning_rate: float, first: int, last: int) -> list:
    import keras

    if profile.lr_schedule != "cosine":
        return []
    # Indexed by the absolute epoch, so a run resumed by BackupAndRestore picks up the same rate.
    return [
        keras.callbacks.LearningRateScheduler(
            lambda epoch, _lr: cosine_learning_rate(learning_rate, epoch, first, last)
        )
    ]


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Balanced class weights, so a 3:1 set does not train a model that always says "positive"."""
    counts = np.bincount(labels.astype(int), minlength=2).astype(float)
    return {c: float(len(labels) / (2.0 * counts[c])) for c in (0, 1) if counts[c] > 0}


def versions() -> dict[str, str]:
    """Library versions that decide whether a result can be reproduced."""
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _progress_callback(total_epochs: int, seconds: list[float], cpu_seconds: list[float], images: int = 0):
    import keras

    class ProgressLog(keras.callbacks.Callback):
        """One readable line per epoch in the task log: wall and CPU seconds, images per second, time left."""

        def on_epoch_begin(self, epoch, logs=None):
            self._start, self._cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            took, cpu = time.perf_counter() - self._start, time.process_time() - self._cpu
            seconds.append(took)
            cpu_seconds.append(cpu)
            shown = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()) if isinstance(v, (int, float)))
            # Images per second over the whole epoch (validation included); time left from this attempt's mean epoch.
            speed = f" {images / took:.1f} img/s" if images and took > 0 else ""
            left = (total_epochs - epoch - 1) * sum(seconds) / len(seconds)
            log.info(
                "epoch %d/%d %.1fs (CPU %.1fs)%s, ETA %.0fs %s", epoch + 1, total_epochs, took, cpu, speed, left, shown
            )

    return ProgressLog()


def _deadline_callback(deadline: float, clock: Clock):
    """Stop after an epoch when another as long as the slowest so far would end past `deadline` (monotonic).

    The night plan sets the deadline from its prediction with a margin. Airflow's execution_timeout is fixed
    when the DAG is parsed, the same for every mapped chain, and a timeout kills the task for a retry that
    resumes the same epochs; this ends the training itself, on a finished epoch, and the best val epoch is
    kept as always. training.json says it happened (`deadline_stopped`).
    """
    import keras

    class StopAtDeadline(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            longest = max(clock.epoch_seconds[-3:], default=0.0)
            if time.monotonic() + longest > deadline:
                log.warning("the night plan's deadline: stopping after epoch %d (next would end past it)", epoch + 1)
                clock.deadline_stopped = True
                self.model.stop_training = True

    return StopAtDeadline()


def _finished_epochs(backup_dir: Path) -> int:
    """Epochs a killed earlier attempt finished, from Keras' BackupAndRestore metadata (0 if none)."""
    for name in ("training_metadata.json", "training_metadata.json.bkp"):
        try:
            return int(json.loads((backup_dir / name).read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            continue
    return 0


def _best_epoch_callback(weights: Path, record: Path, finished: int):
    """A callback keeping the weights of the best val AUC epoch so far, across phases and resumed attempts.

    Each improvement writes the weights, then `record` ({"epoch", "val_auc"}), both atomically and
    before BackupAndRestore marks the epoch finished. A record of an epoch the backup does not hold
    (killed between the two) is discarded, because that epoch runs again and history.csv forgets it.
    """
    import keras

    from medcore.jsonio import read_json

    kept = None
    if finished and record.exists() and weights.exists():
        try:
            kept = read_json(record)
        except ValueError:
            kept = None
        if kept is not None and int(kept.get("epoch", finished)) >= finished:
            kept = None
    if kept is None:
        record.unlink(missing_ok=True)
        weights.unlink(missing_ok=True)

    class KeepBestEpoch(keras.callbacks.Callback):
        """Saves the model's weights whenever val AUC beats every earlier epoch of this training."""

        def __init__(self):
            super().__init__()
            self.weights_path = weights
            self.best = None if kept is None else {"epoch": int(kept["epoch"]), "val_auc": float(kept["val_auc"])}

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_auc")
            if value is None or not math.isfinite(float(value)):
                return  # a val split without both classes has no AUC: nothing to select on
            if self.best is not None and float(value) <= self.best["val_auc"]:
                return
            weights.parent.mkdir(parents=True, exist_ok=True)
            tmp = weights.with_name(f".tmp.{weights.name}")
            self.model.save_weights(tmp)
            os.replace(tmp, weights)
            self.best = {"epoch": int(epoch), "val_auc": float(value)}
            write_json(record, self.best)

    return KeepBestEpoch()


def restore_best_epoch(model, keeper) -> dict[str, Any] | None:
    """Load the best epoch's weights into `model`; return {"epoch", "val_auc"} (None: no epoch had a val AUC)."""
    if keeper.best is None:
        return None
    model.load_weights(keeper.weights_path)
    return dict(keeper.best)


def _history_rows(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError):
        return pd.DataFrame()


@dataclass(frozen=True)
class Phase:
    """One stretch of training: epochs [first, last) at one size and base rate, the backbone frozen or not."""

    name: str  # "frozen", "small" (progressive resizing) or "fine_tune"; also its BackupAndRestore folder
    first: int
    last: int
    learning_rate: float
    image_size: int
    schedule: tuple[int, int]  # the epochs its cosine spans: a phase of its own, or one shared by both sizes

    @property
    def selects(self) -> bool:
        """Whether its epochs may become the saved model: only full-size ones, whose val AUC the record can report."""
        return self.name != "small"


@dataclass
class Clock:
    """Wall and CPU time of one training attempt: from its start, to its first step, and per epoch."""

    start: float = field(default_factory=time.perf_counter)
    # This process's CPU seconds (every thread) at the start. Wall seconds without CPU seconds are time the
    # training did not compute: another task on its core, the host, or the process waiting on itself.
    cpu_start: float = field(default_factory=time.process_time)
    first_step: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_cpu_seconds: list[float] = field(default_factory=list)
    cpu_seconds: float | None = None  # set when the attempt ends
    deadline_stopped: bool = False  # the night plan's deadline ended the training early
    images_per_epoch: int = 0  # training images one epoch reads, for the progress line's img/s

    def step_done(self) -> None:
        if not self.first_step:
            self.first_step.append(time.perf_counter() - self.start)


def train_model(
    config: Config,
    profile: Profile,
    split: pd.DataFrame,
    paths: ModelLayout,
    epochs: int | None = None,
    warm_start: Path | None = None,
    warm: WarmStartPlan | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Fit DenseNet121 on the train split, select on val, save `model.keras`; return the training record.

    `warm_start` (for `weights: champion` or `shared`) is a saved model whose weights start this one;
    `warm` says how a night's warm start treats the champion's weights and rate (medcore.model.warmstart).
    A retried attempt resumes after the last epoch an earlier one finished. `deadline` (time.monotonic()):
    the night plan's end for this training; no epoch starts that its predecessors say would pass it.
    """
    import keras

    threads = configure_threads(profile)
    keras.utils.set_random_seed(config.seed)
    epochs = epochs or profile.epochs
    train, val = split[split["split"] == "train"], split[split["split"] == "val"]
    datasets: dict[int, tuple[Any, Any]] = {}

    def data_at(size: int) -> tuple[Any, Any]:
        if size not in datasets:
            sized = _at_size(profile, size)
            datasets[size] = (
                make_dataset(train, sized, training=True, seed=config.seed),
                make_dataset(val, sized, training=False, seed=config.seed),
            )
        return datasets[size]

    paths.root.mkdir(parents=True, exist_ok=True)
    resumed_from = _resume_point(paths, profile)

    # How float32 trains fastest on this CPU kind (medcore.model.compute.FLOAT32_SPEED); bf16 keeps the profile's.
    speed = compute.choose_float32_speed(compute.choose_precision(profile.precision)["mode"], profile.fused_batch_norm)
    clock = Clock(images_per_epoch=len(train))
    with precision_policy(profile) as chosen, compute.fused_batch_norm(speed["fused_batch_norm"]) as fused:
        model, weights_used = _initial_model(profile, config.seed, warm_start)
        warm_record = None
        if warm is not None and warm_start is not None:
            # A resumed attempt restores its own weights from the backup: the champion's are prepared only once.
            batches = 0 if resumed_from else _prepare_warm_start(model, profile, warm, config.seed, data_at)
            warm_record = warm.record(batches)
        weights = class_weights(train["label"].to_numpy()) if profile.class_weighting else None
        # Epochs history.csv holds (trimmed above): the best of those may be kept from an earlier attempt.
        keeper = _best_epoch_callback(
            paths.backup_dir / "best.weights.h5", paths.backup_dir / "best.json", len(_history_rows(paths.history_csv))
        )
        phases = _phases(profile, epochs, weights_used)
        steps = max(1, math.ceil(len(train) / profile.batch_size))
        fit = functools.partial(_fit_phase, deadline=deadline, warm=warm, steps_per_epoch=steps)
        stoppers = [
            fit(model, phase, profile, paths, data_at, weights, epochs, clock, keeper, config.seed) for phase in phases
        ]
        best = restore_best_epoch(model, keeper)  # the saved model is the epoch the record reports
    wall = time.perf_counter() - clock.start
    clock.cpu_seconds = time.process_time() - clock.cpu_start
    precision = chosen["mode"]
    contract = training_contract(
        profile, seed=config.seed, precision=precision, gradcam_layer=config.gradcam.layer, versions=versions()
    )
    _save_model(model, paths, contract)

    history = _history_rows(paths.history_csv)
    record = _training_record(
        profile,
        paths,
        history,
        epochs=epochs,
        resumed_from=resumed_from,
        wall=wall,
        clock=clock,
        weights_used=weights_used,
        stoppers=stoppers,
        train=train,
        val=val,
        seed=config.seed,
        threads=threads,
        precision=precision,
        versions=contract["versions"],
        best=best,
    )
    small = [p for p in phases if p.name == "small"]
    record["warm_start"] = warm_record
    record["progressive"] = (
        {"image_size": small[0].image_size, "epochs": small[0].last - small[0].first} if small else None
    )
    # What this CPU made of the profile's precision and cores, and why (medcore.model.compute).
    record["compute"] = {
        "precision": chosen,
        "fused_batch_norm": fused,
        "speed": speed,
        "cores": profile.cores,
        "threads": threads,
        "cpu_bf16": compute.cpu_supports_bf16(),
        # Set where an older CPU is emulated on a newer one; the choices above were made from the capped flags.
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
    return record


def _phase_marker(paths: ModelLayout, phase: str) -> Path:
    """Weights saved when a first phase (frozen, or small images) ends, so a retry goes straight on to the next."""
    return paths.backup_dir / f"{phase}_phase.weights.h5"


FIRST_PHASES = ("frozen", "small")


def _resume_point(paths: ModelLayout, profile: Profile) -> int:
    """Epochs an earlier attempt finished (0 for a fresh start); history.csv is trimmed to match."""
    resumed_from = next(
        (n for n in (_finished_epochs(paths.backup_dir / p) for p in ("fine_tune", *FIRST_PHASES)) if n), 0
    )
    if resumed_from == 0 and not any(_phase_marker(paths, p).exists() for p in FIRST_PHASES):
        paths.history_csv.unlink(missing_ok=True)  # a fresh start must not append to an old history
        return 0
    log.info("resuming %s/%s after %d finished epochs", paths.condition, profile.name, resumed_from)
    # The history row of an epoch is written before its backup, so a kill between the two
    # leaves a row for an epoch that will run again: keep only the epochs the backup holds.
    rows = _history_rows(paths.history_csv)
    if len(rows) > resumed_from:
        atomic_write_text(paths.history_csv, rows.iloc[:resumed_from].to_csv(index=False))
    return resumed_from


def _initial_model(profile: Profile, seed: int, warm_start: Path | None) -> tuple[Any, str]:
    """The compiled model with its starting weights, and those weights described for the record."""
    model = build_model(profile, seed)
    if profile.weights not in WARM_STARTS:
        return model, profile.weights
    if warm_start is None:
        return model, WARM_STARTS[profile.weights]
    copied = warm_start_from(model, warm_start)
    return model, f"{profile.weights} {warm_start} ({copied} layers)"


def _prepare_warm_start(
    model, profile: Profile, warm: WarmStartPlan, seed: int, data_at: Callable[[int], tuple[Any, Any]]
) -> int:
    """Shrink and perturb the champion's weights in `model` (if the plan says so); return the batches batch norm's
    statistics were re-estimated on (0: kept)."""
    if warm.method != "shrink_perturb":
        return 0
    fresh = build_network(profile, seed)  # the next draw of the same initialisers: the perturbation
    changed = shrink_and_perturb(model, fresh, warm.shrink, warm.perturb)
    log.info("warm start: shrink %.2f, perturb %.3f on %d weight tensors", warm.shrink, warm.perturb, changed)
    if warm.batch_norm != "reestimate":
        return 0
    return reestimate_batch_norm(model, data_at(profile.image_size)[0])


def _at_size(profile: Profile, size: int) -> Profile:
    """The profile's model and data at another image size (no progressive resizing of its own)."""
    return profile if size == profile.image_size else replace(profile, image_size=size, progressive=Progressive())


def _phases(profile: Profile, epochs: int, weights_used: str) -> list[Phase]:
    """The first phase (a frozen backbone for pretrained weights, or small images for progressive resizing) and
    the fine-tuning phase at full size, skipping empty ones."""
    full, rate = profile.image_size, profile.learning_rate
    freeze = min(profile.freeze_epochs, epochs) if not weights_used.startswith("none") else 0
    if freeze:
        fine_tune_rate = profile.fine_tune_learning_rate or rate / 10
        phases = [
            Phase("frozen", 0, freeze, rate, full, (0, freeze)),
            Phase("fine_tune", freeze, epochs, fine_tune_rate, full, (freeze, epochs)),
        ]
    else:
        # A short warm start (a share of the epochs) keeps at least one epoch at full size.
        small, tune = min(profile.progressive.epochs, epochs - 1), profile.fine_tune_learning_rate or rate
        phases = [
            Phase("small", 0, small, tune, profile.progressive.image_size, (0, epochs)),
            Phase("fine_tune", small, epochs, tune, full, (0, epochs)),
        ]
    return [p for p in phases if p.last > p.first]


def _fit_phase(
    model,
    phase: Phase,
    profile: Profile,
    paths: ModelLayout,
    data_at: Callable[[int], tuple[Any, Any]],
    weights: dict[int, float] | None,
    epochs: int,
    clock: Clock,
    keeper,
    seed: int,
    deadline: float | None = None,
    warm: WarmStartPlan | None = None,
    steps_per_epoch: int = 1,
):
    """Train one phase (resuming where a killed attempt stopped); return its early-stopping callback (None if the
    phase had already finished or selects no epoch)."""
    import keras

    if phase.name in FIRST_PHASES and _phase_marker(paths, phase.name).exists():
        return None  # finished before a retry; the fine-tuning phase loads its weights
    fitted = model
    if phase.name == "fine_tune" and phase.first > 0:
        for first in FIRST_PHASES:
            if _phase_marker(paths, first).exists():
                model.load_weights(_phase_marker(paths, first))
        _set_backbone_trainable(model, True)
        _compile(model, profile, phase.learning_rate)
    elif phase.name == "frozen":
        _set_backbone_trainable(model, False)
        _compile(model, profile, phase.learning_rate)
    elif phase.name == "small":
        # Same layers and weight shapes at another input size: its weights load into the full-size model.
        fitted = build_model(_at_size(profile, phase.image_size), seed)
    train_data, val_data = data_at(phase.image_size)
    # The best epoch is restored once, after every phase, from `keeper` (not per phase or attempt). Small-image
    # epochs neither stop training nor become the saved model: their val AUC is not the full-size model's.
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_auc", mode="max", patience=profile.patience, restore_best_weights=False, verbose=0
    )
    callbacks = [
        *([stopper] if phase.selects else []),
        # Before the CSV logger, so history.csv records the rate each epoch trained at.
        *(
            [rewarm_callback(warm, phase.learning_rate, steps_per_epoch, phase.first, phase.last)]
            if warm is not None and warm.rewarm > 0 and phase.name == "fine_tune"
            else _schedule_callbacks(profile, phase.learning_rate, *phase.schedule)
        ),
        keras.callbacks.CSVLogger(str(paths.history_csv), append=True),
        *([keeper] if phase.selects else []),
        # Last, so an epoch counts as finished only once everything above has been written.
        # A retried task (killed worker, reboot) resumes after the last finished epoch.
        keras.callbacks.BackupAndRestore(str(paths.backup_dir / phase.name), double_checkpoint=True),
        _progress_callback(epochs, clock.epoch_seconds, clock.epoch_cpu_seconds, clock.images_per_epoch),
        keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: clock.step_done()),
        *([_deadline_callback(deadline, clock)] if deadline else []),
    ]
    fitted.fit(
        train_data,
        validation_data=val_data,
        initial_epoch=phase.first,
        epochs=phase.last,
        callbacks=callbacks,
        class_weight=weights,
        verbose=0,
    )
    if phase.name in FIRST_PHASES:
        fitted.save_weights(_phase_marker(paths, phase.name))
    return stopper if phase.selects else None


def _save_model(model, paths: ModelLayout, contract: dict[str, Any]) -> None:
    """Put model.keras and its contract in place, then drop what only a resumed attempt needed."""
    save_model_with_contract(model, paths, contract)
    markers = [_phase_marker(paths, p) for p in FIRST_PHASES]
    for leftover in (*markers, paths.backup_dir / "best.weights.h5", paths.backup_dir / "best.json"):
        leftover.unlink(missing_ok=True)


def _training_record(
    profile: Profile,
    paths: ModelLayout,
    history: pd.DataFrame,
    *,
    epochs: int,
    resumed_from: int,
    wall: float,
    clock: Clock,
    weights_used: str,
    stoppers: list,
    train: pd.DataFrame,
    val: pd.DataFrame,
    seed: int,
    threads: dict[str, int | None],
    precision: str,
    versions: dict[str, str],
    best: dict[str, Any] | None,
) -> dict[str, Any]:
    """training.json: what was trained, how long it took, where it ended, with which libraries."""
    import tensorflow as tf

    epochs_run = len(history)
    epochs_this_attempt = max(epochs_run - resumed_from, 0)
    return {
        "condition": paths.condition,
        "profile": profile.name,
        "image_size": profile.image_size,
        "resize": profile.resize,
        "learning_rate": profile.learning_rate,
        "lr_schedule": profile.lr_schedule,
        "class_weighting": profile.class_weighting,
        "weights": profile.weights,
        "weights_used": weights_used,
        "epochs_planned": epochs,
        "epochs_run": epochs_run,
        "resumed_from_epoch": resumed_from,
        "early_stopped": any(s.stopped_epoch for s in stoppers if s is not None),
        "deadline_stopped": clock.deadline_stopped,
        # The epoch whose weights model.keras holds (0-based, as history.csv's `epoch`), and its val AUC.
        "best_epoch": best["epoch"] if best else None,
        "best_val_auc": best["val_auc"] if best else None,
        "selected_epoch": "best val AUC" if best else "last (val AUC undefined in every epoch)",
        "wall_seconds": wall,
        "seconds_to_first_step": clock.first_step[0] if clock.first_step else None,
        "epoch_seconds": clock.epoch_seconds,
        "images_per_second": len(train) * epochs_this_attempt / wall if wall > 0 else None,
        # CPU seconds of the training process over the same span, so a slow night can be told apart from a
        # busy one: fewer CPU seconds than wall seconds x threads is time the training did not compute.
        "cpu_seconds": clock.cpu_seconds,
        "epoch_cpu_seconds": clock.epoch_cpu_seconds,
        "train_images": len(train),
        "val_images": len(val),
        "seed": seed,
        "threads": threads,
        "execution": profile.execution,
        "precision": precision,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "device": "CPU" if not tf.config.list_physical_devices("GPU") else "GPU",
        "versions": versions,
        "model_path": paths.model,
        "split_manifest": paths.split_csv,
        "history": {c: history[c].tolist() for c in history.columns},
    }
