"""Held-out evaluation: a threshold chosen on val, metrics with bootstrap intervals measured on test.

Contract. Scores are P(positive) in [0, 1]; labels are 1 (positive) or 0 (negative). Every figure
is computed by one weighted routine (`weighted_metrics`): the point estimate uses weight 1 per
image, and each bootstrap resample uses how often the resample drew the image (or its patient),
so the point estimate and its interval can never disagree about what a metric means.

The decision threshold is fixed on the validation split before the test split is scored and is
held fixed across resamples: the intervals describe the sampling uncertainty of the test split at
that threshold, not the uncertainty of choosing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from medcore.artefacts import METRICS, SELECTION_FIGURES
from medcore.assess.calibration import calibration_report, fit_temperature, sigmoid
from medcore.assess.metrics import (
    ThresholdChoice,
    binary_metrics,
    bootstrap_intervals,
    bootstrap_weights,
    choose_threshold,
    group_codes,
    paired_auc_difference,
    quality_tier,
    sensitivity_threshold,
    units_per_class,
    weighted_metrics,
    youden_threshold,
)
from medcore.assess.plots import PLOTS, png_bytes, render_plots
from medcore.assess.predict import (
    check_model_archive,
    list_images,
    load_model,
    predict_files,
    predict_logits,
    predict_probabilities,
    refusals,
)
from medcore.config import EvaluationSettings, Profile
from medcore.errors import MedcoreError

# Re-exported for existing callers.
from medcore.model.contract import contract_resize, contract_temperature, contract_threshold, file_sha256, read_contract

__all__ = [
    "load_model",
    "check_model_archive",
    "predict_probabilities",
    "youden_threshold",
    "sensitivity_threshold",
    "choose_threshold",
    "ThresholdChoice",
    "weighted_metrics",
    "binary_metrics",
    "bootstrap_weights",
    "bootstrap_intervals",
    "quality_tier",
    "units_per_class",
    "evaluate_scores",
    "evaluate_model",
    "render_plots",
    "PLOTS",
    "METRICS",
    "list_images",
    "predict_files",
    "refusals",
    "contract_threshold",
    "read_contract",
    "file_sha256",
    "png_bytes",
    "predict_logits",
    "sigmoid",
    "fit_temperature",
    "calibration_report",
    "contract_temperature",
    "contract_resize",
    "aggregate_studies",
    "study_level",
    "evaluate_model_splits",
    "selection_figures",
    "paired_auc_difference",
]

# The metrics, calibration, plots and scoring of new images live in metrics.py, calibration.py, plots.py and
# predict.py beside this module; their names stay importable from here, as callers have always imported them.

CLINICAL_NOTE = "research-grade discrimination only, not fitness for clinical use"


def evaluate_scores(
    val_labels: np.ndarray,
    val_probabilities: np.ndarray,
    test_labels: np.ndarray,
    test_probabilities: np.ndarray,
    test_groups: Sequence | np.ndarray | None = None,
    settings: EvaluationSettings = EvaluationSettings(),
    seed: int = 0,
) -> dict[str, Any]:
    """Choose the threshold on val only, then measure test at it, with intervals and a quality tier."""
    choice = choose_threshold(val_labels, val_probabilities, settings.threshold_rule, settings.target_sensitivity)
    metrics = binary_metrics(test_labels, test_probabilities, choice.value, settings.calibration_bins)
    boot = bootstrap_intervals(
        test_labels,
        test_probabilities,
        choice.value,
        groups=test_groups,
        resamples=settings.bootstrap_resamples,
        confidence=settings.confidence,
        seed=seed,
        calibration_bins=settings.calibration_bins,
    )
    auc_interval = boot["intervals"].get("roc_auc")
    auc_low = auc_interval["low"] if auc_interval and metrics["roc_auc"] is not None else None
    units = units_per_class(test_labels, test_groups)
    unit = "patient" if test_groups is not None else "image"
    metrics.update(
        {
            "intervals": boot["intervals"],
            "bootstrap": {
                "resamples": settings.bootstrap_resamples,
                "confidence": settings.confidence,
                "seed": seed,
                "method": "percentile",
                "stratified": True,
                "unit": unit,
                "groups": len(np.unique(group_codes(len(test_labels), test_groups))),
                "units_per_class": units,
                "undefined_resamples": boot["undefined"],
            },
            "threshold": choice.value,
            "threshold_rule": choice.rule,
            "threshold_split": choice.split,
            "threshold_choice": asdict(choice),
            "evaluated_split": "test",
            "quality": _quality(auc_low, units, unit, settings),
        }
    )
    return metrics


def _quality(auc_low: float | None, units: dict[str, int], unit: str, settings: EvaluationSettings) -> dict[str, Any]:
    """The quality tier the AUC interval's lower bound reaches, or `insufficient` and why (too few units, no AUC)."""
    tier, reason = quality_tier(auc_low, settings.tiers), None
    if min(units.values()) < settings.min_per_class:
        tier = "insufficient"
        reason = (
            f"only {units['positive']} positive and {units['negative']} negative test {unit}s; "
            f"a tier needs {settings.min_per_class} of each"
        )
    elif auc_low is None:
        reason = "ROC AUC undefined"
    return {
        "tier": tier,
        "basis": "roc_auc interval lower bound",
        "value": auc_low,
        "reason": reason,
        "tiers": dict(settings.tiers),
        "min_per_class": settings.min_per_class,
        "note": CLINICAL_NOTE,
    }


def evaluate_model(
    model,
    split: pd.DataFrame,
    profile: Profile,
    settings: EvaluationSettings = EvaluationSettings(),
    seed: int = 0,
    study_aggregation: str = "mean",
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score val and test, fit the temperature and pick the threshold on val, measure test.

    Every probability from here on (metrics, predictions.csv, overlays, `medcore predict`) is the
    calibrated one, sigmoid(logit / temperature); the raw one stays in predictions.csv beside it.
    Where `split` has a `study` column, the figures are per study (see `study_level`) and the image
    ones move to `image_level`; predictions stay per image, decided at the image-level threshold.
    Returns metrics and test predictions.
    """
    metrics, predictions, _ = evaluate_model_splits(model, split, profile, settings, seed, study_aggregation)
    return metrics, predictions


def _predictions(
    frame: pd.DataFrame, probabilities: np.ndarray, threshold: float | None = None, logits: np.ndarray | None = None
) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "relpath": frame["relpath"].to_numpy(),
            "path": frame["path"].to_numpy(),
            "label": frame["label"].astype(int).to_numpy(),
            "probability": probabilities,
        }
    )
    if threshold is not None:
        table["predicted"] = (probabilities >= threshold).astype(int)
    if logits is not None:
        table["logit"], table["probability_uncalibrated"] = logits, sigmoid(logits)
    for column in ("group", "sha256", "study"):
        if column in frame.columns:
            table[column] = frame[column].astype(str).to_numpy()
    return table


def evaluate_model_splits(
    model,
    split: pd.DataFrame,
    profile: Profile,
    settings: EvaluationSettings = EvaluationSettings(),
    seed: int = 0,
    study_aggregation: str = "mean",
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """As `evaluate_model`, plus the selection figures on val (`metrics["selection"]`) and the val predictions.

    The selection figures are what the choice among profiles and the champion decision read, so the
    test split is only ever reported, never consulted.
    """
    val = split[split["split"] == "val"].reset_index(drop=True)
    test = split[split["split"] == "test"].reset_index(drop=True)
    if val.empty or test.empty:
        raise MedcoreError(f"evaluation needs val and test images; the split has {len(val)} val and {len(test)} test")
    groups = test["group"].astype(str).to_numpy() if "group" in test.columns else None
    val_logits, test_logits = predict_logits(model, val, profile), predict_logits(model, test, profile)
    temperature = fit_temperature(val["label"].to_numpy(), val_logits) if settings.calibrate else 1.0
    probabilities, val_probabilities = sigmoid(test_logits, temperature), sigmoid(val_logits, temperature)
    metrics = evaluate_scores(
        val["label"].to_numpy(), val_probabilities, test["label"].to_numpy(), probabilities, groups, settings, seed
    )
    metrics["temperature"] = temperature
    metrics["calibration"] = calibration_report(
        test["label"].to_numpy(), test_logits, temperature, groups=groups, settings=settings, seed=seed
    )
    if not settings.calibrate:
        metrics["calibration"]["method"] = "none (evaluation.calibrate is false)"
    metrics["selection"] = selection_figures(val, val_probabilities, settings, seed)
    predictions = _predictions(test, probabilities, metrics["threshold"], test_logits)
    if "study" in split.columns:
        val_frame = val.assign(probability=val_probabilities)
        metrics = study_level(val_frame, predictions, metrics, settings, seed, study_aggregation)
    return metrics, predictions, _predictions(val, val_probabilities, logits=val_logits)


def selection_figures(
    val: pd.DataFrame, probabilities: np.ndarray, settings: EvaluationSettings = EvaluationSettings(), seed: int = 0
) -> dict[str, Any]:
    """Figures on the selection (val) split at the val threshold, with patient-resampled intervals and a tier.

    They are optimistic in absolute terms (the threshold and the early-stopping epoch were chosen on
    these images), which is why decisions compare them paired with the champion on the same images.
    """
    groups = val["group"].astype(str).to_numpy() if "group" in val.columns else None
    labels = val["label"].to_numpy()
    full = evaluate_scores(labels, probabilities, labels, probabilities, groups, settings, seed)
    kept = {name: full[name] for name in SELECTION_FIGURES if name in full}
    return {**kept, "split": "val", "quality_tier": full["quality"]["tier"], "unit": full["bootstrap"]["unit"]}


def aggregate_studies(frame: pd.DataFrame, how: str = "mean") -> pd.DataFrame:
    """One row per study: its label, patient (`group`) and probability (mean or max of its images')."""
    if how not in ("mean", "max"):
        raise ValueError(f"study aggregation must be 'mean' or 'max', got {how!r}")
    columns = {"label": ("label", "max"), "probability": ("probability", how), "images": ("probability", "size")}
    if "group" in frame.columns:
        columns["group"] = ("group", "first")
    return frame.groupby(frame["study"].astype(str), sort=True).agg(**columns).reset_index()


def study_level(
    val: pd.DataFrame,
    test: pd.DataFrame,
    image_metrics: dict[str, Any],
    settings: EvaluationSettings = EvaluationSettings(),
    seed: int = 0,
    how: str = "mean",
) -> dict[str, Any]:
    """Metrics per study (MURA's unit): threshold fitted on val studies, intervals resampled by patient.

    The image-level figures stay, under `image_level`; the returned figures are the study's.
    """
    val_studies, test_studies = aggregate_studies(val, how), aggregate_studies(test, how)
    groups = test_studies["group"].astype(str).to_numpy() if "group" in test_studies.columns else None
    metrics = evaluate_scores(
        val_studies["label"].to_numpy(),
        val_studies["probability"].to_numpy(),
        test_studies["label"].to_numpy(),
        test_studies["probability"].to_numpy(),
        groups,
        settings,
        seed,
    )
    image_level = {k: v for k, v in image_metrics.items() if k not in ("calibration", "temperature")}
    metrics.update(
        {
            "unit": "study",
            "study_aggregation": how,
            "n_images": image_metrics["n"],
            "threshold_split": "val (studies)",
            "image_level": image_level,
            "temperature": image_metrics.get("temperature"),
            "calibration": image_metrics.get("calibration"),
            # What the gates and the choice among profiles read, in the unit the figures are reported in.
            # Without it a study-level set had no selection figures and could never become a champion.
            "selection": selection_figures(val_studies, val_studies["probability"].to_numpy(), settings, seed),
        }
    )
    return metrics
