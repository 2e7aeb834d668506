"""metrics.json: test figures, the selection figures that decide, the comparison with the champion."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from medcore.artefacts.base import Artefact, Open, load_artefact

__all__ = [
    "Interval",
    "Figures",
    "Quality",
    "Bootstrap",
    "ImageMetrics",
    "SelectionFigures",
    "PairedComparison",
    "VersusChampion",
    "Metrics",
    "load_metrics",
]


class Interval(Open):
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


class Figures(Open):
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


class Quality(Open):
    """The quality tier the lower bound of the ROC AUC interval reaches (research grade, never clinical)."""

    tier: str
    value: float | None = None
    basis: str | None = None
    reason: str | None = None
    tiers: dict[str, float] = Field(default_factory=dict)
    min_per_class: int | None = None
    note: str | None = None


class Bootstrap(Open):
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


class PairedComparison(Open):
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


class VersusChampion(Open):
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


def load_metrics(path: str | Path) -> Metrics:
    """metrics.json."""
    return load_artefact(Metrics, path)
