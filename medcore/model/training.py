"""DenseNet121 training: the phases, fitting with Keras callbacks, atomic saving, the training record.

The network itself is built in medcore.model.network, the callbacks live in medcore.model.callbacks.

A retried task resumes from the last finished epoch (Keras BackupAndRestore), and the model file
is only ever replaced whole, so a crash never leaves half a model where a good one was.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcore.config import Config, Profile
from medcore.data.datasets import make_dataset
from medcore.layout import ModelLayout
from medcore.model import compute
from medcore.model.callbacks import (
    Clock,
    best_epoch_callback,
    deadline_callback,
    history_rows,
    progress_callback,
    restore_best_epoch,
)
from medcore.model.contract import save_model_with_contract, training_contract
from medcore.model.network import (
    IMAGENET_WEIGHTS_FILE,
    build_model,
    build_network,
    compile_model,
    set_backbone_trainable,
    warm_start_from,
)
from medcore.model.phases import FIRST_PHASES, Phase, at_size, phase_marker, plan_phases, resume_point
from medcore.model.warmstart import WarmStartPlan, reestimate_batch_norm, rewarm_callback, shrink_and_perturb

__all__ = [
    "build_model",
    "train_model",
    "save_model_with_contract",
    "configure_threads",
    "versions",
    "IMAGENET_WEIGHTS_FILE",
    "build_network",
    "warm_start_from",
    "restore_best_epoch",
]

log = logging.getLogger(__name__)

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
    data_at = _datasets_by_size(train, val, profile, config.seed)
    paths.root.mkdir(parents=True, exist_ok=True)
    resumed_from = resume_point(paths, profile)
    # How float32 trains fastest on this CPU kind (medcore.model.compute.FLOAT32_SPEED); bf16 keeps the profile's.
    speed = compute.choose_float32_speed(compute.choose_precision(profile.precision)["mode"], profile.fused_batch_norm)
    clock = Clock(images_per_epoch=len(train))
    with precision_policy(profile) as chosen, compute.fused_batch_norm(speed["fused_batch_norm"]) as fused:
        model, weights_used, warm_record = _starting_model(
            profile, config.seed, warm_start, warm, resumed_from, data_at
        )
        phases = plan_phases(profile, epochs, weights_used)
        stoppers, best = _fit_phases(
            model, phases, profile, paths, data_at, train, epochs, clock, config.seed, warm, deadline
        )
    wall = clock.stop()
    contract = _save_model(model, paths, profile, config, chosen["mode"])
    record = _training_record(
        profile,
        paths,
        epochs=epochs,
        resumed_from=resumed_from,
        wall=wall,
        clock=clock,
        weights_used=weights_used,
        stoppers=stoppers,
        images=(len(train), len(val)),
        seed=config.seed,
        threads=threads,
        precision=chosen["mode"],
        versions=contract["versions"],
        best=best,
    )
    record["warm_start"] = warm_record
    record["progressive"] = _progressive_record(phases)
    record["compute"] = _compute_record(profile, chosen, fused, speed, threads)
    return record


def _starting_model(
    profile: Profile,
    seed: int,
    warm_start: Path | None,
    warm: WarmStartPlan | None,
    resumed_from: int,
    data_at: Callable[[int], tuple[Any, Any]],
) -> tuple[Any, str, dict[str, Any] | None]:
    """The compiled model with its starting weights, those weights described, and the warm start's record."""
    model, weights_used = _initial_model(profile, seed, warm_start)
    if warm is None or warm_start is None:
        return model, weights_used, None
    # A resumed attempt restores its own weights from the backup: the champion's are prepared only once.
    batches = 0 if resumed_from else _prepare_warm_start(model, profile, warm, seed, data_at)
    return model, weights_used, warm.record(batches)


def _progressive_record(phases: list[Phase]) -> dict[str, int] | None:
    """The small-image phase of progressive resizing, as training.json reports it (None without one)."""
    small = [p for p in phases if p.name == "small"]
    return {"image_size": small[0].image_size, "epochs": small[0].last - small[0].first} if small else None


def _datasets_by_size(
    train: pd.DataFrame, val: pd.DataFrame, profile: Profile, seed: int
) -> Callable[[int], tuple[Any, Any]]:
    """`data_at(size)`: the train and val datasets at an image size, each size built once."""
    datasets: dict[int, tuple[Any, Any]] = {}

    def data_at(size: int) -> tuple[Any, Any]:
        if size not in datasets:
            sized = at_size(profile, size)
            datasets[size] = (
                make_dataset(train, sized, training=True, seed=seed),
                make_dataset(val, sized, training=False, seed=seed),
            )
        return datasets[size]

    return data_at


def _fit_phases(
    model,
    phases: list[Phase],
    profile: Profile,
    paths: ModelLayout,
    data_at: Callable[[int], tuple[Any, Any]],
    train: pd.DataFrame,
    epochs: int,
    clock: Clock,
    seed: int,
    warm: WarmStartPlan | None,
    deadline: float | None,
) -> tuple[list, dict[str, Any] | None]:
    """Fit every phase in turn, then load the best val epoch's weights; return each phase's early stopper and
    that epoch ({"epoch", "val_auc"}, None if no epoch had a val AUC)."""
    weights = class_weights(train["label"].to_numpy()) if profile.class_weighting else None
    # Epochs history.csv holds (trimmed above): the best of those may be kept from an earlier attempt.
    keeper = best_epoch_callback(
        paths.backup_dir / "best.weights.h5", paths.backup_dir / "best.json", len(history_rows(paths.history_csv))
    )
    steps = max(1, math.ceil(len(train) / profile.batch_size))
    fit = functools.partial(_fit_phase, deadline=deadline, warm=warm, steps_per_epoch=steps)
    stoppers = [fit(model, phase, profile, paths, data_at, weights, epochs, clock, keeper, seed) for phase in phases]
    return stoppers, restore_best_epoch(model, keeper)  # the saved model is the epoch the record reports


def _compute_record(
    profile: Profile, chosen: dict[str, str], fused: Any, speed: dict[str, Any], threads: dict[str, int | None]
) -> dict[str, Any]:
    """What this CPU made of the profile's precision and cores, and why (medcore.model.compute)."""
    return {
        "precision": chosen,
        "fused_batch_norm": fused,
        "speed": speed,
        "cores": profile.cores,
        "threads": threads,
        "cpu_bf16": compute.cpu_supports_bf16(),
        # Set where an older CPU is emulated on a newer one; the choices above were made from the capped flags.
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }


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

    if phase.name in FIRST_PHASES and phase_marker(paths, phase.name).exists():
        return None  # finished before a retry; the fine-tuning phase loads its weights
    fitted = _model_for_phase(model, phase, profile, paths, seed)
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
        progress_callback(epochs, clock.epoch_seconds, clock.epoch_cpu_seconds, clock.images_per_epoch),
        keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: clock.step_done()),
        *([deadline_callback(deadline, clock)] if deadline else []),
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
        fitted.save_weights(phase_marker(paths, phase.name))
    return stopper if phase.selects else None


def _model_for_phase(model, phase: Phase, profile: Profile, paths: ModelLayout, seed: int):
    """The model `phase` fits, made ready: the backbone frozen or thawed and recompiled, or a small-image twin."""
    if phase.name == "fine_tune" and phase.first > 0:
        for first in FIRST_PHASES:
            if phase_marker(paths, first).exists():
                model.load_weights(phase_marker(paths, first))
        set_backbone_trainable(model, True)
        compile_model(model, profile, phase.learning_rate)
    elif phase.name == "frozen":
        set_backbone_trainable(model, False)
        compile_model(model, profile, phase.learning_rate)
    elif phase.name == "small":
        # Same layers and weight shapes at another input size: its weights load into the full-size model.
        return build_model(at_size(profile, phase.image_size), seed)
    return model


def _save_model(model, paths: ModelLayout, profile: Profile, config: Config, precision: str) -> dict[str, Any]:
    """Put model.keras and its contract in place, then drop what only a resumed attempt needed; return the contract."""
    contract = training_contract(
        profile, seed=config.seed, precision=precision, gradcam_layer=config.gradcam.layer, versions=versions()
    )
    save_model_with_contract(model, paths, contract)
    markers = [phase_marker(paths, p) for p in FIRST_PHASES]
    for leftover in (*markers, paths.backup_dir / "best.weights.h5", paths.backup_dir / "best.json"):
        leftover.unlink(missing_ok=True)
    return contract


def _training_record(
    profile: Profile,
    paths: ModelLayout,
    *,
    epochs: int,
    resumed_from: int,
    wall: float,
    clock: Clock,
    weights_used: str,
    stoppers: list,
    images: tuple[int, int],
    seed: int,
    threads: dict[str, int | None],
    precision: str,
    versions: dict[str, str],
    best: dict[str, Any] | None,
) -> dict[str, Any]:
    """training.json: what was trained, how long it took, where it ended, with which libraries."""
    import tensorflow as tf

    history = history_rows(paths.history_csv)
    train_images, val_images = images
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
        **_timing_record(clock, wall, train_images * epochs_this_attempt),
        "train_images": train_images,
        "val_images": val_images,
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


def _timing_record(clock: Clock, wall: float, image_epochs: int) -> dict[str, Any]:
    """training.json's timings: wall seconds, to the first step, per epoch, images per second, CPU seconds."""
    return {
        "wall_seconds": wall,
        "seconds_to_first_step": clock.first_step[0] if clock.first_step else None,
        "epoch_seconds": clock.epoch_seconds,
        "images_per_second": image_epochs / wall if wall > 0 else None,
        # CPU seconds of the training process over the same span, so a slow night can be told apart from a
        # busy one: fewer CPU seconds than wall seconds x threads is time the training did not compute.
        "cpu_seconds": clock.cpu_seconds,
        "epoch_cpu_seconds": clock.epoch_cpu_seconds,
    }
