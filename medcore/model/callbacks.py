"""The Keras callbacks of a training: progress lines, the night's deadline, the best val epoch kept across
attempts, and what a killed attempt left behind (finished epochs, history.csv)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medcore.jsonio import write_json

__all__ = [
    "Clock",
    "progress_callback",
    "deadline_callback",
    "finished_epochs",
    "best_epoch_callback",
    "restore_best_epoch",
    "history_rows",
]

log = logging.getLogger("medcore.model.training")  # the task log's lines keep the logger they always had


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

    def stop(self) -> float:
        """End the attempt: set its CPU seconds, and return its wall seconds."""
        wall = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start
        return wall

    def step_done(self) -> None:
        if not self.first_step:
            self.first_step.append(time.perf_counter() - self.start)


def progress_callback(total_epochs: int, seconds: list[float], cpu_seconds: list[float], images: int = 0):
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


def deadline_callback(deadline: float, clock: Clock):
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


def finished_epochs(backup_dir: Path) -> int:
    """Epochs a killed earlier attempt finished, from Keras' BackupAndRestore metadata (0 if none)."""
    for name in ("training_metadata.json", "training_metadata.json.bkp"):
        try:
            return int(json.loads((backup_dir / name).read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            continue
    return 0


def best_epoch_callback(weights: Path, record: Path, finished: int):
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


def history_rows(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError):
        return pd.DataFrame()
