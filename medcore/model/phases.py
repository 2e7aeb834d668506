"""A training's phases (a frozen backbone or small images first, then fine-tuning at full size), and where a
killed attempt left off."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from medcore.config import Profile, Progressive
from medcore.jsonio import atomic_write_text
from medcore.layout import ModelLayout
from medcore.model.callbacks import finished_epochs, history_rows

__all__ = ["Phase", "FIRST_PHASES", "plan_phases", "phase_marker", "resume_point", "at_size"]

log = logging.getLogger("medcore.model.training")  # the task log's lines keep the logger they always had


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


def phase_marker(paths: ModelLayout, phase: str) -> Path:
    """Weights saved when a first phase (frozen, or small images) ends, so a retry goes straight on to the next."""
    return paths.backup_dir / f"{phase}_phase.weights.h5"


FIRST_PHASES = ("frozen", "small")


def resume_point(paths: ModelLayout, profile: Profile) -> int:
    """Epochs an earlier attempt finished (0 for a fresh start); history.csv is trimmed to match."""
    resumed_from = next(
        (n for n in (finished_epochs(paths.backup_dir / p) for p in ("fine_tune", *FIRST_PHASES)) if n), 0
    )
    if resumed_from == 0 and not any(phase_marker(paths, p).exists() for p in FIRST_PHASES):
        paths.history_csv.unlink(missing_ok=True)  # a fresh start must not append to an old history
        return 0
    log.info("resuming %s/%s after %d finished epochs", paths.condition, profile.name, resumed_from)
    # The history row of an epoch is written before its backup, so a kill between the two
    # leaves a row for an epoch that will run again: keep only the epochs the backup holds.
    rows = history_rows(paths.history_csv)
    if len(rows) > resumed_from:
        atomic_write_text(paths.history_csv, rows.iloc[:resumed_from].to_csv(index=False))
    return resumed_from


def at_size(profile: Profile, size: int) -> Profile:
    """The profile's model and data at another image size (no progressive resizing of its own)."""
    return profile if size == profile.image_size else replace(profile, image_size=size, progressive=Progressive())


def plan_phases(profile: Profile, epochs: int, weights_used: str) -> list[Phase]:
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
