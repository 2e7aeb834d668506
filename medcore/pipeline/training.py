"""The train stage: train the model on the saved split as tonight's plan says (scratch, warm start or skip)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

from medcore.config import Config
from medcore.errors import Skipped
from medcore.jsonio import atomic_write_text, read_json, write_json
from medcore.layout import ModelLayout
from medcore.pipeline.stage import Job, read_split, stage

__all__ = ["train"]

log = logging.getLogger("medcore.pipeline")


@stage("train")
def train(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Train the model on the saved split as tonight's plan says (scratch, warm start or skip); write training.json.

    Where the test split holds too few patients of a class, the estimate comes from cross-validation
    (fold models first) and the model trained here sees all the data (medcore.assess.crossval).
    """
    from medcore.model.training import train_model
    from medcore.nights.nightly import SKIP

    plan = read_json(paths.nightly_json) if paths.nightly_json.exists() else {"mode": "retrain"}
    if plan["mode"] == SKIP:
        raise Skipped(f"{condition.name}: {plan['reason']}")
    split = read_split(paths)
    profile, epochs, start = _starting_point(job, config, condition.name, profile, plan, split)
    deadline = time.monotonic() + 60 * job["train_deadline_minutes"] if job.get("train_deadline_minutes") else None
    crossval, split = _cross_validated(config, condition.name, profile, split, paths, epochs)
    record = train_model(
        config, profile, split, paths, epochs=epochs, warm_start=start.path, warm=start.warm, deadline=deadline
    )
    record.update(
        {
            "machine": _machine(),
            "planned_epochs": job.get("planned_epochs"),
            "train_deadline_minutes": job.get("train_deadline_minutes"),
            "dataset_fingerprint": read_json(paths.validation_json)["fingerprint"],
            "nightly_mode": plan["mode"],
            "nightly_reason": plan.get("reason"),
            "warm_start_source": start.source,
            "estimate": "cross-validation" if crossval else "test split",
        }
    )
    write_json(paths.training_json, record)
    return job


@dataclasses.dataclass(frozen=True)
class _Start:
    """Where training starts: the weights file (None: the profile's own), the warm-start plan, the champion."""

    path: Path | None
    warm: Any = None
    source: dict[str, Any] | None = None


def _starting_point(job: Job, config: Config, condition: str, profile, plan: dict[str, Any], split):
    """(profile, epochs, start) for tonight's mode: a warm start continues the champion at a share of the
    profile's rates and epochs by growth; scratch never starts from a champion; the budget caps the epochs."""
    from medcore.model.warmstart import WarmStartPlan
    from medcore.nights.nightly import CONTINUE, growth_share, read_trained_on, warm_epochs

    epochs = job.get("epochs") or profile.epochs
    if plan["mode"] == CONTINUE:
        source = plan["champion"]
        growth = growth_share(
            read_trained_on(source.get("trained_on_path")), split.loc[split["split"] == "train", "sha256"]
        )
        warm = WarmStartPlan.from_settings(config.nightly, profile.learning_rate, growth)
        epochs = warm_epochs(epochs, config.nightly.continue_epochs, growth, config.nightly.epochs_by_growth)
        profile = _warm_started(profile, config.nightly.continue_learning_rate)
        start = _Start(Path(source["model_path"]), warm, source)
    elif profile.weights == "champion":  # a profile asking for the champion gets none when the plan says scratch
        profile, start = _with(profile, weights="none"), _Start(None)
    else:
        start = _Start(_warm_start(config, condition, profile.weights))
    return profile, _budgeted_epochs(job, plan["mode"], epochs), start


def _cross_validated(config: Config, condition: str, profile, split, paths: ModelLayout, epochs: int):
    """(True, all the data) after writing the out-of-fold logits when the test split is too small to measure
    anything (fold models first; the shipped model sees all the data); else (False, `split`)."""
    from medcore.assess.crossval import all_data_split, cross_validate, needs_cross_validation

    if not needs_cross_validation(split, config.evaluation):
        paths.crossval_csv.unlink(missing_ok=True)
        return False, split
    log.info(
        "%s/%s: small test split; %d x %d-fold cross-validation",
        condition,
        profile.name,
        config.evaluation.crossval_repeats,
        config.evaluation.crossval_folds,
    )
    logits = cross_validate(config, profile, split, paths, epochs=epochs)
    atomic_write_text(paths.crossval_csv, logits.to_csv(index=False))
    return True, all_data_split(split)


def _budgeted_epochs(job: Job, mode: str, epochs: int) -> int:
    """The epochs tonight's budget allows: the plan's cut where it planned this mode, else the profile's.

    The plan is made before validation decides the mode from the registry; a chain that turns out to
    retrain where a warm start was planned (or the other way) keeps its own epochs, and the log says so.
    """
    planned = job.get("planned_epochs")
    if not planned:
        return epochs
    if job.get("planned_mode") not in (None, mode):
        log.warning(
            "%s/%s: planned as %s but trains as %s; the budget's %d epochs do not apply, %d do",
            job["condition"], job["profile"], job["planned_mode"], mode, planned, epochs,
        )  # fmt: skip
        return epochs
    return min(epochs, int(planned))


def _machine() -> dict[str, Any]:
    """The CPU kind a training ran on: what the night planner keys its speed figures by."""
    from medcore.nights.budget import cpu_id

    return {"cpu_id": cpu_id(), "cores": os.cpu_count()}


def _with(profile, **changes):
    """`profile` with some keys changed (dataclass or pydantic model alike)."""
    if hasattr(profile, "model_copy"):
        return profile.model_copy(update=changes)
    return dataclasses.replace(profile, **changes)


def _warm_started(profile, rate_share: float):
    """The profile a warm start from the champion trains: its weights, at a share of the profile's rates.

    The champion has converged; a first epoch at the scratch rate (1e-3) threw that away (val AUC 0.99 -> 0.70
    on a 30 % pneumonia set, docs/decisions/0009-warm-start-continue.md) and the night paid an epoch to get it back.
    """
    tuned = profile.fine_tune_learning_rate
    return _with(
        profile,
        weights="champion",
        learning_rate=profile.learning_rate * rate_share,
        fine_tune_learning_rate=None if tuned is None else tuned * rate_share,
    )


def _warm_start(config: Config, condition: str, weights: str) -> Path | None:
    """The shared backbone a profile's `weights: shared` starts from, if `medcore pretrain` wrote it yet."""
    if weights == "shared":
        from medcore.nights.registry import registry_of

        path = registry_of(config).shared_backbone
        return path if path.is_file() else None
    return None
