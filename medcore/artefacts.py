"""Typed artefacts: the files one stage writes and another reads, as pydantic models with a loader each.

Stages still write plain dicts (jsonio.write_json); these models say what those dicts hold, so a reader
gets an object whose fields it can trust, and a file that does not fit fails at once, in one line that
names the file and the first bad field. Files carry open-ended keys (versions, settings, per-split
counts), so every model allows extra keys: a file that has more than the model names still loads.

Each file has a `schema_version`. Files written before it existed have none and are read as version 1;
a file from a newer medcore (a higher version) is refused, not misread.

The metric names are declared here once; config, evaluation, the registry and the tests' fakes
import them (or a subset derived below) from here.

Only pydantic and medcore.errors are imported: every stage may read an artefact, so this module must
not import a stage (tests/test_layers.py).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medcore.errors import MedcoreError

__all__ = [
    "METRICS",
    "GATE_METRICS",
    "SELECTION_FIGURES",
    "KEPT_FIGURES",
    "SCHEMA_VERSION",
    "ArtefactError",
    "Artefact",
    "Interval",
    "Figures",
    "Quality",
    "Bootstrap",
    "ImageMetrics",
    "SelectionFigures",
    "PairedComparison",
    "VersusChampion",
    "Metrics",
    "ModelContract",
    "TrainingRecord",
    "Finding",
    "ValidationSummary",
    "NightlyPlan",
    "RunSummary",
    "KeptFigures",
    "Champion",
    "HistoryEntry",
    "RegistryRecord",
    "TrendRow",
    "load_contract",
    "load_training",
    "load_metrics",
    "load_validation",
    "load_nightly",
    "load_summary",
    "load_registry_record",
    "load_trend",
]

# --------------------------------------------------------------------------- the metric names, declared once

# The figures evaluation measures with a point estimate and an interval, and the report shows.
METRICS = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "brier",
    "calibration_error",
    "kappa",
)
# Figures a gate may name, each "higher is better": brier and calibration error are lower-is-better, and kappa
# (the study-level agreement MURA publishes) is reported, never gated. config.GateName spells these out.
GATE_METRICS = tuple(name for name in METRICS if name not in ("brier", "calibration_error", "kappa"))
# The selection (val) figures evaluation keeps for decisions: the gateable ones, with their counts and threshold.
SELECTION_FIGURES = ("n", "n_positive", *GATE_METRICS, "threshold", "intervals")
# Figures copied into the registry with the champion, so its record stands alone once old runs are deleted.
# Kappa is left out as it always was (the registry predates it), so records keep their shape.
KEPT_FIGURES = ("n", "n_positive", *(name for name in METRICS if name != "kappa"), "threshold", "threshold_rule")

SCHEMA_VERSION = 1  # every artefact below is at version 1: the files as they were when versions began


class ArtefactError(MedcoreError):
    """An artefact that cannot be read: not JSON, from a newer medcore, or a field of the wrong kind."""


class _Open(BaseModel):
    """A part of an artefact: named fields typed, any other key kept as it is."""

    model_config = ConfigDict(extra="allow")


class Artefact(_Open):
    """A whole file. `FILE` is its usual name; `schema_version` 1 when the file has none (written before versions)."""

    FILE: ClassVar[str] = ""
    schema_version: int = SCHEMA_VERSION


# --------------------------------------------------------------------------- metrics.json


class Interval(_Open):
    """A bootstrap interval. Older records stored it as a [low, high] pair; both shapes load as this one."""

    low: float | None = None
    high: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return {"low": value[0], "high": value[1]}
        return value

    def bounds(self) -> tuple[float, float] | None:
        """(low, high), or None when either is missing (as registry.interval reads it)."""
        return None if self.low is None or self.high is None else (self.low, self.high)


class Figures(_Open):
    """Point estimates on one split at one threshold (a figure undefined on the split is None), with intervals."""

    n: int | None = None
    n_positive: int | None = None
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    specificity: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    pr_auc: float | None = None
    brier: float | None = None
    calibration_error: float | None = None
    kappa: float | None = None
    threshold: float | None = None
    intervals: dict[str, Interval | None] = Field(default_factory=dict)


class Quality(_Open):
    """The quality tier the lower bound of the ROC AUC interval reaches (research grade, never clinical)."""

    tier: str
    value: float | None = None
    basis: str | None = None
    reason: str | None = None
    tiers: dict[str, float] = Field(default_factory=dict)
    min_per_class: int | None = None
    note: str | None = None


class Bootstrap(_Open):
    """How the intervals were resampled."""

    resamples: int
    confidence: float
    seed: int | None = None
    unit: str = "image"
    groups: int | None = None
    method: str | None = None
    stratified: bool | None = None
    units_per_class: dict[str, int] | None = None
    undefined_resamples: dict[str, int] = Field(default_factory=dict)


class ImageMetrics(Figures):
    """What evaluation.evaluate_scores measures on the test split (also metrics.json's `image_level`)."""

    confusion_matrix: dict[str, int] | None = None
    bootstrap: Bootstrap | None = None
    threshold_rule: str | None = None
    threshold_split: str | None = None
    threshold_choice: dict[str, Any] | None = None
    evaluated_split: str | None = None
    quality: Quality | None = None


class SelectionFigures(Figures):
    """The val figures decisions read (evaluation.selection_figures); the test split is only reported."""

    split: str = "val"
    quality_tier: str | None = None
    unit: str | None = None


class PairedComparison(_Open):
    """Challenger against champion on the same images (evaluation.paired_auc_difference)."""

    n: int
    n_positive: int | None = None
    unit: str | None = None
    units: int | None = None
    challenger_auc: float | None = None
    champion_auc: float | None = None
    delta: float | None = None
    low: float | None = None
    high: float | None = None
    challenger_interval: tuple[float | None, float | None] | None = None
    champion_interval: tuple[float | None, float | None] | None = None
    resamples: int | None = None
    confidence: float | None = None
    method: str | None = None


class VersusChampion(_Open):
    """The champion re-scored on tonight's images; `champion_missing` says why when it could not be."""

    champion: str
    champion_promoted: str | None = None
    champion_missing: str | None = None
    selection: PairedComparison | None = None
    test: PairedComparison | None = None


class Metrics(ImageMetrics, Artefact):
    """metrics.json: test figures (per study where the set has studies, the images' under `image_level`),
    the selection figures that decide, the paired comparison with the champion, calibration and plots."""

    FILE: ClassVar[str] = "metrics.json"
    selection: SelectionFigures | None = None
    versus_champion: VersusChampion | None = None
    temperature: float | None = None
    calibration: dict[str, Any] | None = None
    unit: str | None = None
    study_aggregation: str | None = None
    n_images: int | None = None
    image_level: ImageMetrics | None = None
    estimate: str | None = None
    crossval: dict[str, Any] | None = None
    shipped_model: dict[str, Any] | None = None
    reference: str | None = None
    plots: dict[str, str] = Field(default_factory=dict)
    model_path: str | None = None


# --------------------------------------------------------------------------- model.json, training.json


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


# --------------------------------------------------------------------------- validation.json, nightly.json


class Finding(_Open):
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


# --------------------------------------------------------------------------- summary.json


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


# --------------------------------------------------------------------------- the registry record, the trend row


class KeptFigures(Figures):
    """The champion's test figures as the registry keeps them (KEPT_FIGURES, intervals, the tier)."""

    threshold_rule: str | None = None
    quality_tier: str | None = None


class Champion(_Open):
    """A candidate, and once promoted the champion (registry.candidate_from, then the copies it owns)."""

    run_id: str
    condition: str | None = None
    profile: str
    model_path: str | None = None
    contract_path: str | None = None
    split_path: str | None = None
    metrics: KeptFigures = Field(default_factory=KeptFigures)
    selection: SelectionFigures | None = None
    test_split_fingerprint: str | None = None
    selection_split_fingerprint: str | None = None
    dataset_fingerprint: str | None = None
    config_digest: str | None = None
    code_version: str | None = None
    mode: str | None = None
    warm_start_trained_on: str | None = None
    warm_starts: int = 0
    source_model_path: str | None = None
    card_path: str | None = None
    model_sha256: str | None = None
    trained_on_path: str | None = None
    promoted: str | None = None
    reason: str | None = None


class HistoryEntry(_Open):
    """One night's decision for a condition, newest first in the record."""

    time: str | None = None
    run_id: str | None = None
    decision: str
    reason: str | None = None
    profile: str | None = None
    roc_auc: float | None = None
    decision_record: dict[str, Any] = Field(default_factory=dict)
    trend_row: dict[str, Any] | None = None


class RegistryRecord(Artefact):
    """registry/<condition>.json: the champion, the one before it, the decisions, the best on current data."""

    FILE: ClassVar[str] = "<condition>.json"
    condition: str
    champion: Champion | None = None
    previous_champion: Champion | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    best: dict[str, Any] | None = None
    test_split: dict[str, Any] | None = None
    updated: str | None = None


class TrendRow(_Open):
    """One night of a condition's trend.csv (nights.trend.TREND_COLUMNS, in that order; a test checks it).

    A CSV has no room for a version per row: the columns are the version, and `schema_version` is not a column.
    """

    schema_version: int = Field(default=SCHEMA_VERSION, exclude=True)
    night: str | None = None
    run_id: str | None = None
    decision: str | None = None
    policy: str | None = None
    mode: str | None = None
    candidate: str | None = None
    selection_split: str | None = None
    test_split: str | None = None
    challenger_selection_auc: float | None = None
    challenger_selection_low: float | None = None
    challenger_selection_high: float | None = None
    champion_selection_auc: float | None = None
    champion_selection_low: float | None = None
    champion_selection_high: float | None = None
    paired_selection_low: float | None = None
    paired_selection_high: float | None = None
    best_selection_auc: float | None = None
    challenger_test_auc: float | None = None
    challenger_test_low: float | None = None
    challenger_test_high: float | None = None
    champion_test_auc: float | None = None
    champion_test_low: float | None = None
    champion_test_high: float | None = None
    test_nights: int | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        """An empty CSV cell is no value (pandas writes None and NaN as empty)."""
        return None if value == "" else value

    @field_validator("test_nights", mode="before")
    @classmethod
    def _whole_float(cls, value: Any) -> Any:
        """A column with an empty cell is float to pandas, so a count may read back as "3.0"."""
        if isinstance(value, str) and value.endswith(".0") and value[:-2].isdigit():
            return value[:-2]
        return value


# --------------------------------------------------------------------------- loaders

A = TypeVar("A", bound=Artefact)


def _first_problem(error: ValidationError) -> str:
    """The first bad field of a validation error, in one line: `selection.roc_auc: input should be a valid number`."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(the whole file)"
    text = " ".join(first["msg"].split())
    return f"{where}: {text[:1].lower()}{text[1:]}"


def _parse(model: type[A], data: Any, path: Path) -> A:
    """`data` (a file's JSON) as `model`, or an ArtefactError naming `path` and the first bad field."""
    if not isinstance(data, dict):
        raise ArtefactError(f"{path}: not a {model.FILE or model.__name__} (a JSON object expected)")
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ArtefactError(
            f"{path}: schema_version {version} is newer than this medcore reads ({SCHEMA_VERSION}); update medcore"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ArtefactError(f"{path}: {_first_problem(exc)}") from None


def _load(model: type[A], path: str | Path) -> A:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtefactError(f"{path}: missing") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ArtefactError(f"{path}: not valid JSON: {' '.join(str(exc).split())[:120]}") from None
    return _parse(model, data, path)


def load_contract(path: str | Path) -> ModelContract:
    """model.json. (The SHA-256 check against the model file stays in model.contract.read_contract.)"""
    return _load(ModelContract, path)


def load_training(path: str | Path) -> TrainingRecord:
    """training.json."""
    return _load(TrainingRecord, path)


def load_metrics(path: str | Path) -> Metrics:
    """metrics.json."""
    return _load(Metrics, path)


def load_validation(path: str | Path) -> ValidationSummary:
    """validation.json."""
    return _load(ValidationSummary, path)


def load_nightly(path: str | Path) -> NightlyPlan:
    """nightly.json."""
    return _load(NightlyPlan, path)


def load_summary(path: str | Path) -> RunSummary:
    """summary.json."""
    return _load(RunSummary, path)


def load_registry_record(path: str | Path) -> RegistryRecord:
    """A condition's registry record (registry/<condition>.json)."""
    return _load(RegistryRecord, path)


def load_trend(path: str | Path) -> list[TrendRow]:
    """A condition's trend.csv, one TrendRow per night; an ArtefactError names the file, the row and the field."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise ArtefactError(f"{path}: missing") from None
    result = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            result.append(TrendRow.model_validate(row))
        except ValidationError as exc:
            raise ArtefactError(f"{path}: line {number}: {_first_problem(exc)}") from None
    return result
