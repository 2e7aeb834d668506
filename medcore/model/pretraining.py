"""In-domain pre-training: one DenseNet121 backbone learnt from every condition's train split.

Each set alone is small for seven million parameters (MURA humerus has about 1,100 training
images), and no ImageNet weights reach these machines. Pre-training one backbone on all five sets,
one sigmoid output per condition, gives every profile a radiograph-shaped start (`weights: shared`).
It runs once, outside the nightly budget (`medcore pretrain`).

Test images must never reach the backbone, or every later test score would be flattered. So the
rows are the pipeline's own splits (same validation, same seed), only `train` rows are learnt from
and `val` rows pick the best epoch, and any image that is a near duplicate of a test image of *any*
condition is left out: the sets come from different sources, but nothing guarantees that.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcore.config import Config, Profile
from medcore.errors import DataError
from medcore.jsonio import atomic_write_text, write_json
from medcore.layout import RegistryLayout

__all__ = ["PretrainingSet", "TASK_SHARES", "pretraining_set", "masked_targets", "task_weights", "pretrain_backbone"]

log = logging.getLogger(__name__)

MISSING = -1.0  # the target of a task an image does not belong to; the loss ignores it


@dataclass
class PretrainingSet:
    """The rows pre-training reads, and what was left out and why."""

    rows: pd.DataFrame  # path, label, split (train|val), task, condition
    tasks: list[str]  # condition names, in output order
    skipped: dict[str, str]  # condition -> why it is not part of pre-training
    test_lookalikes: dict[str, int]  # condition -> train/val images dropped as near duplicates of a test image

    def counts(self) -> dict[str, dict[str, int]]:
        table = self.rows.groupby(["condition", "split"]).size().unstack(fill_value=0)
        return {c: {s: int(n) for s, n in table.loc[c].items()} for c in table.index}


def _test_lookalikes(frame: pd.DataFrame, max_distance: int) -> np.ndarray:
    """True for train/val rows whose perceptual hash is within `max_distance` bits of any test row's."""
    from medcore.data.validation import near_duplicate_components, scan_files

    scans = scan_files(frame["path"], [True] * len(frame))
    unreadable = [s.status for s in scans if not s.phash]
    if unreadable:
        raise DataError(
            f"{len(unreadable)} images could not be read again for the test-lookalike check "
            f"(first: {unreadable[0]}); re-run validation"
        )
    hashes = np.stack([np.frombuffer(s.phash, np.uint8) for s in scans])
    component = near_duplicate_components(hashes, max_distance)
    is_test = (frame["split"] == "test").to_numpy()
    test_components = set(component[is_test].tolist())
    return ~is_test & np.isin(component, list(test_components))


def pretraining_set(config: Config, profile: Profile, conditions: list[str] | None = None) -> PretrainingSet:
    """Return every usable condition's train and val rows, minus any image that looks like a test image.

    A condition whose data fails validation is skipped (and named), never the whole pre-training.
    """
    from medcore.data.validation import validate_condition

    names = list(conditions or config.conditions)
    unknown = [n for n in names if n not in config.conditions]
    if unknown:
        raise DataError(f"{config.path}: no condition named {', '.join(unknown)}")
    frames, skipped = [], {}
    for name in names:
        result = validate_condition(config, config.conditions[name], profile)
        if not result.ok:
            skipped[name] = result.reason
            log.warning("pre-training skips %s: %s", name, result.reason)
            continue
        assert result.manifest is not None  # an ok validation always has its manifest
        frames.append(result.manifest[["path", "label", "split"]].assign(condition=name))
    if not frames:
        raise DataError(
            "no condition has usable data for pre-training: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    everything = pd.concat(frames, ignore_index=True)
    # Exact copies have identical hashes, so this one pass catches them along with near duplicates.
    lookalike = _test_lookalikes(everything, config.validation.near_duplicate_distance)
    dropped = everything[lookalike].groupby("condition").size()
    rows = everything[~lookalike & (everything["split"] != "test")].copy()
    tasks = [n for n in names if n not in skipped]
    rows["task"] = rows["condition"].map({n: i for i, n in enumerate(tasks)}).astype(int)
    return PretrainingSet(rows.reset_index(drop=True), tasks, skipped, {c: int(dropped.get(c, 0)) for c in tasks})


def masked_targets(rows: pd.DataFrame, tasks: int) -> np.ndarray:
    """One row per image, one column per task: the image's label in its own task, MISSING elsewhere."""
    targets = np.full((len(rows), tasks), MISSING, dtype=np.float32)
    targets[np.arange(len(rows)), rows["task"].to_numpy()] = rows["label"].to_numpy(dtype=np.float32)
    return targets


TASK_SHARES = ("equal", "by_size")


def task_weights(rows: pd.DataFrame, shares: str = "equal") -> np.ndarray:
    """Per-image loss weights: both classes of a task weigh the same; tasks by `shares`, weights averaging 1.

    `equal` gives every task the same share, so pneumonia's 4,000 training images do not drown
    MURA's 1,100; but it also gives the 50 knee-osteoporosis images a fifth of every gradient, each
    image weighing 44-60 on the real sets. `by_size` keeps the tasks in proportion to their training images.
    """
    if shares not in TASK_SHARES:
        raise ValueError(f"task shares must be one of {', '.join(TASK_SHARES)}, got {shares!r}")
    per_cell = rows.groupby(["task", "label"])["task"].transform("size").to_numpy(dtype=np.float64)
    if shares == "equal":
        weights = 1.0 / (rows.groupby(["task", "label"]).ngroups * per_cell)
    else:
        per_task = rows.groupby("task")["task"].transform("size").to_numpy(dtype=np.float64)
        classes = rows.groupby("task")["label"].transform("nunique").to_numpy(dtype=np.float64)
        weights = per_task / (classes * per_cell) / len(rows)
    return (weights * len(rows) / weights.sum()).astype(np.float32)


def _masked_loss(y_true, y_pred):
    import keras
    from keras import ops

    mask = ops.cast(ops.greater_equal(y_true, 0.0), "float32")
    per_task = keras.losses.binary_crossentropy(
        ops.expand_dims(ops.maximum(y_true, 0.0), -1), ops.expand_dims(y_pred, -1), from_logits=True
    )
    return ops.sum(per_task * mask, axis=-1) / ops.maximum(ops.sum(mask, axis=-1), 1.0)


def _task_auc_callback(val_data, rows: pd.DataFrame, tasks: list[str], scores: list[dict[str, float]]):
    import keras
    from sklearn.metrics import roc_auc_score

    class TaskAUC(keras.callbacks.Callback):
        """Val ROC AUC per task after each epoch; their mean (`val_mean_auc`) picks the best epoch."""

        def on_epoch_end(self, epoch, logs=None):
            logits = self.model.predict(val_data, verbose=0)
            epoch_scores = {}
            for i, name in enumerate(tasks):
                mine = (rows["task"] == i).to_numpy()
                labels = rows.loc[mine, "label"].to_numpy()
                if len(set(labels)) == 2:
                    epoch_scores[name] = float(roc_auc_score(labels, logits[mine, i]))
            scores.append(epoch_scores)
            if logs is not None:
                logs["val_mean_auc"] = float(np.mean(list(epoch_scores.values()))) if epoch_scores else 0.0

    return TaskAUC()


def _scores_at(scores: list[dict[str, float]], epoch: int, epochs_run: int) -> dict[str, float]:
    """Per-condition val AUC of `epoch` (0-based), if this attempt ran it (a resumed one starts later)."""
    index = epoch - (epochs_run - len(scores))
    return scores[index] if 0 <= index < len(scores) else {}


def pretrain_backbone(
    config: Config,
    profile: Profile,
    registry: RegistryLayout,
    *,
    epochs: int | None = None,
    conditions: list[str] | None = None,
    task_shares: str = "equal",
) -> dict[str, Any]:
    """Learn the shared backbone from every condition, save it to the registry; return its record.

    The saved model has one logit per condition (layer `task_logits`); profiles with
    `weights: shared` copy every layer but that head. A killed run resumes after its last
    finished epoch; the backbone is only ever replaced whole, once training succeeded.
    """
    import keras

    from medcore.model.callbacks import progress_callback
    from medcore.model.network import build_network
    from medcore.model.training import _schedule_callbacks, configure_threads

    epochs = epochs or profile.epochs
    data = pretraining_set(config, profile, conditions)
    train = data.rows[data.rows["split"] == "train"].reset_index(drop=True)
    val = data.rows[data.rows["split"] == "val"].reset_index(drop=True)
    if train.empty or val.empty:
        raise DataError("pre-training needs train and val images; the splits left none")
    threads = configure_threads(profile)
    keras.utils.set_random_seed(config.seed)
    train_data, val_data = _pretraining_datasets(train, val, len(data.tasks), profile, config.seed, task_shares)
    work = registry.shared_backbone_work
    best, history_csv, best_so_far = _resume_pretraining(work)

    model = build_network(profile, config.seed, outputs=len(data.tasks), head="task_logits")
    model.compile(
        optimizer=keras.optimizers.Adam(profile.learning_rate),
        loss=_masked_loss,
        run_eagerly=profile.execution == "eager",
    )
    scores: list[dict[str, float]] = []
    seconds: list[float] = []
    cpu_seconds: list[float] = []
    start = time.perf_counter()
    callbacks = [
        _task_auc_callback(val_data, val, data.tasks, scores),  # first: the callbacks below read its figure
        *_schedule_callbacks(profile, profile.learning_rate, 0, epochs),
        *_checkpoint_callbacks(work, best, history_csv, best_so_far),
        progress_callback(epochs, seconds, cpu_seconds),
    ]
    model.fit(train_data, validation_data=val_data, epochs=epochs, verbose=0, callbacks=callbacks)
    wall = time.perf_counter() - start
    history = pd.read_csv(history_csv)
    _publish_backbone(best, registry)
    timing = {"wall_seconds": wall, "epoch_seconds": seconds, "epoch_cpu_seconds": cpu_seconds}
    record = _pretraining_record(
        config, profile, registry, data, task_shares, history, scores, timing, len(train), threads
    )
    write_json(registry.shared_backbone_record, record)
    shutil.rmtree(work, ignore_errors=True)  # finished: a new pre-training starts from scratch
    return record


def _checkpoint_callbacks(work: Path, best: Path, history_csv: Path, best_so_far: float | None) -> list:
    """history.csv, the best epoch's model and the backup a killed attempt resumes from, in that order."""
    import keras

    return [
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.ModelCheckpoint(
            str(best), monitor="val_mean_auc", mode="max", save_best_only=True, initial_value_threshold=best_so_far
        ),
        keras.callbacks.BackupAndRestore(str(work / "backup"), double_checkpoint=True),
    ]


def _pretraining_datasets(
    train: pd.DataFrame, val: pd.DataFrame, n_tasks: int, profile: Profile, seed: int, task_shares: str
) -> tuple[Any, Any]:
    """The train and val datasets of pre-training: one masked target per condition, train weighted by task share."""
    from medcore.data.datasets import image_dataset

    train_data = image_dataset(
        train["path"].to_numpy(dtype=str),
        masked_targets(train, n_tasks),
        profile.image_size,
        profile.batch_size,
        training=True,
        seed=seed,
        sample_weights=task_weights(train, task_shares),
    )
    val_data = image_dataset(
        val["path"].to_numpy(dtype=str),
        masked_targets(val, n_tasks),
        profile.image_size,
        profile.batch_size,
        training=False,
        seed=seed,
    )
    return train_data, val_data


def _resume_pretraining(work: Path) -> tuple[Path, Path, float | None]:
    """The best-epoch model and history.csv paths under `work`, cleared for a fresh start or trimmed for a resumed
    one, and the best val mean AUC a resumed attempt must beat (None: any epoch will do)."""
    from medcore.model.callbacks import finished_epochs, history_rows

    work.mkdir(parents=True, exist_ok=True)
    best, history_csv = work / "best.keras", work / "history.csv"
    resumed_from = finished_epochs(work / "backup")
    history = history_rows(history_csv).iloc[:resumed_from]  # rows of epochs a killed attempt finished
    if resumed_from == 0:
        best.unlink(missing_ok=True)
        history_csv.unlink(missing_ok=True)
    else:
        log.info("resuming pre-training after %d finished epochs", resumed_from)
        atomic_write_text(history_csv, history.to_csv(index=False))
    # A resumed attempt must not replace the best epoch so far with a worse one of its own.
    best_so_far = (
        float(history["val_mean_auc"].max()) if resumed_from and best.exists() and "val_mean_auc" in history else None
    )
    return best, history_csv, best_so_far


def _publish_backbone(best: Path, registry: RegistryLayout) -> None:
    """Make the best epoch's model the registry's shared backbone, atomically and on disk."""
    from medcore.jsonio import fsync_dir, fsync_file

    registry.root.mkdir(parents=True, exist_ok=True)
    fsync_file(best)  # on disk before the rename makes it the backbone every profile starts from
    os.replace(best, registry.shared_backbone)  # same folder tree, so the rename is atomic
    fsync_dir(registry.root)


def _pretraining_record(
    config: Config,
    profile: Profile,
    registry: RegistryLayout,
    data: Any,
    task_shares: str,
    history: pd.DataFrame,
    scores: list[dict[str, float]],
    timing: dict[str, Any],
    train_images: int,
    threads: dict[str, int | None],
) -> dict[str, Any]:
    """shared_backbone.json: what the backbone learnt from, its best epoch's val AUC per condition, its cost."""
    from medcore.model.training import versions

    best_epoch = int(history["val_mean_auc"].idxmax())
    wall, seconds = timing["wall_seconds"], timing["epoch_seconds"]
    return {
        "model_path": registry.shared_backbone,
        "profile": profile.name,
        "image_size": profile.image_size,
        "conditions": data.tasks,
        "task_shares": task_shares,
        "skipped": data.skipped,
        "images": data.counts(),
        "test_lookalikes_dropped": data.test_lookalikes,
        "epochs": len(history),
        "best_epoch": best_epoch + 1,
        "val_mean_auc": float(history["val_mean_auc"].max()),
        "val_auc": _scores_at(scores, best_epoch, len(history)),
        # Per-epoch scores of this attempt only; a resumed run's earlier epochs are in history.csv.
        "val_auc_by_epoch": scores,
        "wall_seconds": wall,
        "epoch_seconds": seconds,
        "epoch_cpu_seconds": timing["epoch_cpu_seconds"],
        "images_per_second": train_images * len(seconds) / wall if wall > 0 else None,
        "threads": threads,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "seed": config.seed,
        "versions": versions(),
    }
