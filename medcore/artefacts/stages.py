"""The files a chain's stages leave: model.json, training.json, validation.json, nightly.json; and summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from medcore.artefacts.base import Artefact, Open, load_artefact

__all__ = [
    "ModelContract",
    "TrainingRecord",
    "Finding",
    "ValidationSummary",
    "NightlyPlan",
    "RunSummary",
    "load_contract",
    "load_training",
    "load_validation",
    "load_nightly",
    "load_summary",
]


class ModelContract(Artefact):
    """model.json beside a model (medcore.model.contract): what it expects, and (after evaluation) its threshold."""

    FILE: ClassVar[str] = "model.json"
    architecture: str | None = None
    input_shape: list[int] | None = None
    input_range: list[int | float] | None = None
    preprocessing: str | None = None
    resize: Literal["squash", "pad"] = "squash"
    output: str | None = None
    gradcam_layer: str | None = None
    classes: dict[str, str] | None = None
    seed: int | None = None
    precision: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    model_file: str | None = None
    model_sha256: str | None = None
    threshold: float | None = None
    threshold_rule: str | None = None
    threshold_split: str | None = None
    study_threshold: float | None = None
    temperature: float | None = Field(default=None, gt=0)
    probability: str | None = None
    estimate: str | None = None
    target_sensitivity: float | None = None
    test_metrics: dict[str, Any] | None = None


class TrainingRecord(Artefact):
    """training.json: what was trained, how long it took, where it ended (training._training_record, pipeline.train)."""

    FILE: ClassVar[str] = "training.json"
    condition: str | None = None
    profile: str | None = None
    image_size: int | None = None
    weights_used: str | None = None
    epochs_planned: int | None = None
    epochs_run: int | None = None
    early_stopped: bool | None = None
    deadline_stopped: bool | None = None
    best_epoch: int | None = None
    best_val_auc: float | None = None
    wall_seconds: float | None = None
    images_per_second: float | None = None
    train_images: int | None = None
    val_images: int | None = None
    seed: int | None = None
    threads: dict[str, int | None] | None = None
    execution: str | None = None
    precision: str | None = None
    device: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    dataset_fingerprint: str | None = None
    nightly_mode: str | None = None
    nightly_reason: str | None = None
    warm_start_source: dict[str, Any] | None = None
    estimate: str | None = None
    history: dict[str, list[Any]] = Field(default_factory=dict)


class Finding(Open):
    """One validation finding (validation.Finding as validation.json holds it)."""

    code: str
    severity: Literal["error", "warning", "info"]
    count: int
    message: str
    examples: list[Any] = Field(default_factory=list)
    policy: str = ""
    dropped: int = 0
    rows: list[str] = Field(default_factory=list)
    dropped_rows: list[str] = Field(default_factory=list)


class ValidationSummary(Artefact):
    """validation.json: whether a condition's dataset can be trained on, and why (ValidationResult.to_dict)."""

    FILE: ClassVar[str] = "validation.json"
    condition: str | None = None
    dataset_dir: str | None = None
    ok: bool
    reason: str = ""
    fingerprint: str = ""
    counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    totals: dict[str, int] = Field(default_factory=dict)
    image_stats: dict[str, Any] = Field(default_factory=dict)
    groups: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    split_balance: dict[str, Any] = Field(default_factory=dict)
    findings: list[Finding] = Field(default_factory=list)


class NightlyPlan(Artefact):
    """nightly.json: how tonight trains one condition (nightly.plan_night, pipeline.plan_condition)."""

    FILE: ClassVar[str] = "nightly.json"
    mode: Literal["retrain", "continue", "skip"]
    warm_start: bool = False
    reason: str | None = None
    since: str | None = None
    contaminated: bool | None = None
    policy: str | None = None
    dataset_fingerprint: str | None = None
    config_digest: str | None = None
    code_version: str | None = None
    changes: dict[str, Any] | None = None
    contamination: dict[str, Any] | None = None
    champion: dict[str, Any] | None = None


class RunSummary(Artefact):
    """summary.json: the run's verdict and counts, written with report.md (report.render.write_report)."""

    FILE: ClassVar[str] = "summary.json"
    run_id: str
    report: str | None = None
    verdict: str
    verdict_words: str | None = None
    verdict_why: str | None = None
    needs: list[str] = Field(default_factory=list)
    plan_error: str | None = None
    planned: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[dict[str, Any]] = Field(default_factory=list)
    nights: dict[str, Any] = Field(default_factory=dict)
    night: dict[str, Any] | None = None


def load_contract(path: str | Path) -> ModelContract:
    """model.json. (The SHA-256 check against the model file stays in model.contract.read_contract.)"""
    return load_artefact(ModelContract, path)


def load_training(path: str | Path) -> TrainingRecord:
    """training.json."""
    return load_artefact(TrainingRecord, path)


def load_validation(path: str | Path) -> ValidationSummary:
    """validation.json."""
    return load_artefact(ValidationSummary, path)


def load_nightly(path: str | Path) -> NightlyPlan:
    """nightly.json."""
    return load_artefact(NightlyPlan, path)


def load_summary(path: str | Path) -> RunSummary:
    """summary.json."""
    return load_artefact(RunSummary, path)
