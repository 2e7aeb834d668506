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

import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcore.artefacts import METRICS, SELECTION_FIGURES
from medcore.config import EvaluationSettings, Profile
from medcore.data.datasets import IMAGE_SUFFIXES, make_dataset
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

# The confusion counts get a point estimate and an interval too (METRICS: config.py).
COUNTS = ("tp", "tn", "fp", "fn")
PLOTS = ("roc", "pr", "calibration", "confusion")
CLINICAL_NOTE = "research-grade discrimination only, not fitness for clinical use"


# DenseNet121's weights are 32 MB as float32; a .keras inflating past this, or a member inflating more than
# MAX_MODEL_RATIO times (weights barely compress), is a decompression bomb, refused from the zip directory.
MAX_MODEL_BYTES = 512 * 2**20
MAX_MODEL_RATIO = 100


def check_model_archive(path) -> None:
    """Refuse a .keras zip whose members would inflate too far, before Keras extracts anything."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip at all: Keras' own error says so
    total = sum(m.file_size for m in members)
    if total > MAX_MODEL_BYTES:
        raise MedcoreError(
            f"{path}: not a loadable .keras model (members sum to {total} bytes uncompressed, "
            f"over {MAX_MODEL_BYTES // 2**20} MiB)"
        )
    for member in members:
        if member.file_size > 2**20 and member.file_size > MAX_MODEL_RATIO * max(member.compress_size, 1):
            raise MedcoreError(
                f"{path}: not a loadable .keras model ({member.filename[:60]!r} inflates "
                f"{member.file_size // max(member.compress_size, 1)}:1, over {MAX_MODEL_RATIO}:1)"
            )


def load_model(path, eager: bool = False):
    """Load a `.keras` model in Keras safe mode (no arbitrary code from the file), after checking its zip sizes."""
    import zipfile

    import keras

    check_model_archive(path)
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    # What Keras raises for a file that is not a model it can build: no config.json in the zip (KeyError),
    # a class it does not know (TypeError), not a zip at all (ValueError, BadZipFile).
    except (KeyError, TypeError, ValueError, OSError, AttributeError, zipfile.BadZipFile) as exc:
        problem = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise MedcoreError(f"{path}: not a loadable .keras model ({type(exc).__name__}: {problem})") from None
    model.run_eagerly = eager
    return model


def predict_logits(model, frame: pd.DataFrame, profile: Profile) -> np.ndarray:
    """Return the model's logit for every row of `frame` (columns `path`, `label`), in order."""
    data = make_dataset(frame, profile, training=False, seed=0).map(lambda image, label: image)
    if profile.execution == "eager":
        logits = np.concatenate([model(batch, training=False).numpy() for batch in data])
    else:
        logits = model.predict(data, verbose=0)
    return logits.reshape(-1).astype(np.float64)


def sigmoid(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(positive) = sigmoid(logit / temperature), computed without overflow."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return np.exp(-np.logaddexp(0.0, -z))


def predict_probabilities(model, frame: pd.DataFrame, profile: Profile, temperature: float = 1.0) -> np.ndarray:
    """Return P(positive) for every row of `frame` (columns `path`, `label`), in order, at `temperature`."""
    return sigmoid(predict_logits(model, frame, profile), temperature)


# --------------------------------------------------------------------------- calibration

# Bounds of the fitted temperature: beyond them the val split is too small or one-sided to say anything.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature T minimising the log loss of sigmoid(logit / T) on (val) labels; 1.0 if a class is missing.

    Temperature scaling (Guo et al. 2017) divides every logit by one number: it changes no ranking,
    so ROC AUC is untouched, and only the stated probabilities move towards what is observed.
    """
    from scipy.optimize import minimize_scalar

    y = np.asarray(labels).astype(float)
    z = np.asarray(logits, dtype=np.float64)
    if len(np.unique(y)) < 2 or not np.isfinite(z).all():
        return 1.0

    def log_loss(log_t: float) -> float:
        scaled = z / np.exp(log_t)
        # -[y log s + (1 - y) log(1 - s)] with s = sigmoid(scaled), in a form that never overflows
        return float(np.mean(np.logaddexp(0.0, scaled) - y * scaled))

    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    found = minimize_scalar(log_loss, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(found.x))


def calibration_report(
    labels: np.ndarray,
    logits: np.ndarray,
    temperature: float,
    *,
    groups: Sequence | None = None,
    settings: EvaluationSettings = EvaluationSettings(),
    seed: int = 0,
) -> dict[str, Any]:
    """ECE and Brier score of the raw and the temperature-scaled probabilities on one split, with intervals.

    Both use the same bootstrap resamples (same seed, groups and strata), so the change is paired.
    """
    labels = np.asarray(labels).astype(int)
    figures: dict[str, Any] = {}
    for name, probabilities in (("before", sigmoid(logits)), ("after", sigmoid(logits, temperature))):
        point = binary_metrics(labels, probabilities, 0.5, settings.calibration_bins)
        boot = bootstrap_intervals(
            labels,
            probabilities,
            0.5,
            groups=groups,
            resamples=settings.bootstrap_resamples,
            confidence=settings.confidence,
            seed=seed,
            calibration_bins=settings.calibration_bins,
        )
        figures[name] = {
            metric: {"value": point[metric], "interval": boot["intervals"].get(metric)}
            for metric in ("calibration_error", "brier")
        }
    return {
        "method": "temperature scaling on logits",
        "temperature": float(temperature),
        "fitted_on": "val",
        "measured_on": "test",
        "bins": settings.calibration_bins,
        **figures,
    }


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class ThresholdChoice:
    """A decision threshold and what it achieved on the split it was chosen on."""

    value: float
    rule: str
    split: str
    n: int
    sensitivity: float | None
    specificity: float | None
    target_sensitivity: float | None = None
    note: str | None = None


def _cuts(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (descending) and the TPR / FPR of predicting positive at `score >= cut`."""
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=float)
    order = np.argsort(-probabilities, kind="mergesort")
    ranked, hits = probabilities[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tpr = np.cumsum(hits)[last_of_tie] / hits.sum()
    fpr = np.cumsum(~hits)[last_of_tie] / (~hits).sum()
    return ranked[last_of_tie], tpr, fpr


def _between(scores: np.ndarray, k: int) -> float:
    # Halfway to the next lower score: the same val images fall on each side, with a margin on
    # both sides for unseen test scores (instead of sitting exactly on one val image's score).
    lower = scores[k + 1] if k + 1 < len(scores) else 0.0
    return float((scores[k] + lower) / 2.0)


def youden_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Return the threshold maximising sensitivity + specificity - 1 (0.5 when one class is missing).

    Ties go to the highest threshold (fewest false positives).
    """
    if len(np.unique(np.asarray(labels).astype(int))) < 2:
        return 0.5
    scores, tpr, fpr = _cuts(labels, probabilities)
    return _between(scores, int(np.argmax(tpr - fpr)))


def sensitivity_threshold(labels: np.ndarray, probabilities: np.ndarray, target: float) -> float:
    """Return the highest threshold whose sensitivity reaches `target` (0.5 when one class is missing)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    if len(np.unique(np.asarray(labels).astype(int))) < 2:
        return 0.5
    scores, tpr, _ = _cuts(labels, probabilities)
    reached = np.flatnonzero(tpr >= target - 1e-12)  # tpr ends at 1.0, so this is never empty
    return _between(scores, int(reached[0]))


def choose_threshold(
    labels: np.ndarray,
    probabilities: np.ndarray,
    rule: str = "youden",
    target_sensitivity: float = 0.9,
    split: str = "val",
) -> ThresholdChoice:
    """Pick the threshold on one split (val) by `rule` and record what it achieved there."""
    labels = np.asarray(labels).astype(int)
    if rule == "youden":
        value = youden_threshold(labels, probabilities)
    elif rule == "sensitivity":
        value = sensitivity_threshold(labels, probabilities, target_sensitivity)
    else:
        raise ValueError(f"threshold rule must be 'youden' or 'sensitivity', got {rule!r}")
    note = None if len(np.unique(labels)) == 2 else f"{split} split lacks a class; default threshold 0.5 used"
    point = binary_metrics(labels, probabilities, value) if len(labels) else {}
    return ThresholdChoice(
        value=value,
        rule=rule,
        split=split,
        n=int(len(labels)),
        sensitivity=point.get("recall"),
        specificity=point.get("specificity"),
        target_sensitivity=target_sensitivity if rule == "sensitivity" else None,
        note=note,
    )


# --------------------------------------------------------------------------- metrics


def weighted_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, weights: np.ndarray, calibration_bins: int = 10
) -> dict[str, np.ndarray]:
    """Every metric for each row of `weights` (shape resamples x images); NaN where undefined.

    Weights are how many times each image counts. Ratios are weighted counts; ROC AUC is the
    weighted Mann-Whitney statistic (ties count half) and PR AUC the weighted average precision,
    both from one sort of the scores shared by every row, so 1000 resamples cost one pass of numpy.
    """
    y = np.asarray(labels).astype(bool)
    p = np.asarray(probabilities, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    if w.shape[1] != len(y) or len(p) != len(y):
        raise ValueError(f"labels ({len(y)}), probabilities ({len(p)}) and weights ({w.shape[1]}) must align")
    predicted = p >= threshold
    tp, fn = w @ (y & predicted), w @ (y & ~predicted)
    fp, tn = w @ (~y & predicted), w @ (~y & ~predicted)
    total = w.sum(axis=1)

    order = np.argsort(-p, kind="mergesort")
    ties = np.r_[0, np.flatnonzero(np.diff(p[order])) + 1]  # first index of each distinct score, descending
    pos = np.add.reduceat(w[:, order] * y[order], ties, axis=1)
    neg = np.add.reduceat(w[:, order] * ~y[order], ties, axis=1)
    pos_total, neg_total = pos.sum(axis=1), neg.sum(axis=1)
    neg_below = neg_total[:, None] - np.cumsum(neg, axis=1)
    tp_at, fp_at = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)

    bins = np.minimum((p * calibration_bins).astype(int), calibration_bins - 1)
    gap_per_bin = (w * (p - y)) @ np.eye(calibration_bins)[bins]  # sum of (score - outcome) per bin

    with np.errstate(divide="ignore", invalid="ignore"):
        precision_at = np.where(pos > 0, tp_at / (tp_at + fp_at), 0.0)
        return {
            "accuracy": (tp + tn) / total,
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "roc_auc": (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (pos_total * neg_total),
            "pr_auc": np.where(pos_total > 0, (pos * precision_at).sum(axis=1) / pos_total, np.nan),
            "brier": (w @ (p - y) ** 2) / total,
            "calibration_error": np.abs(gap_per_bin).sum(axis=1) / total,
            # Cohen's kappa of the decisions against the labels: agreement beyond what the marginals give by chance.
            "kappa": _kappa(tp, tn, fp, fn, total),
            "tp": tp,
            "tn": tn,
            "fp": fp,
            "fn": fn,
        }


def _kappa(tp: np.ndarray, tn: np.ndarray, fp: np.ndarray, fn: np.ndarray, total: np.ndarray) -> np.ndarray:
    observed = (tp + tn) / total
    chance = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / total**2
    return np.where(chance < 1, (observed - chance) / (1 - chance), np.nan)


def _number(value: float) -> float | None:
    return None if not math.isfinite(float(value)) else float(value)


def binary_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, calibration_bins: int = 10
) -> dict[str, Any]:
    """Point estimates at `threshold`; a metric whose denominator is empty is None, not 0.

    ROC AUC and PR AUC need both classes; calibration error is the expected calibration error
    over `calibration_bins` equal-width bins of the score.
    """
    labels = np.asarray(labels).astype(int)
    values = weighted_metrics(labels, probabilities, threshold, np.ones((1, len(labels))), calibration_bins)
    both_classes = len(np.unique(labels)) == 2
    point = {name: _number(values[name][0]) for name in METRICS}
    if not both_classes:
        point["roc_auc"] = point["pr_auc"] = None
    return {
        "n": int(len(labels)),
        "n_positive": int(labels.sum()),
        **point,
        "confusion_matrix": {name: int(round(values[name][0])) for name in COUNTS},
    }


def _group_codes(n: int, groups: Sequence | None) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} images")
    return np.unique(np.asarray(groups).astype(str), return_inverse=True)[1].reshape(-1)


def bootstrap_weights(
    n: int, resamples: int, rng: np.random.Generator, groups: Sequence | None = None, strata: Sequence | None = None
) -> np.ndarray:
    """How often each of `n` images is drawn in each resample (resamples x n).

    With `groups`, whole groups (patients) are drawn with replacement and bring all their images,
    because images of one patient are not independent evidence. With `strata` (per image; a group
    takes its highest value), groups are drawn within each stratum separately, so every resample
    keeps the original number of positive and negative patients, as pROC's stratified bootstrap
    does: sensitivity, specificity and AUC are then defined in every resample.
    """
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    codes = _group_codes(n, groups)
    count = int(codes.max()) + 1
    stratum_of_group = np.zeros(count, dtype=np.int64)
    if strata is not None:
        np.maximum.at(stratum_of_group, codes, np.asarray(strata).astype(np.int64))
    drawn = np.zeros((resamples, count), dtype=np.int64)
    for stratum in np.unique(stratum_of_group):
        members = np.flatnonzero(stratum_of_group == stratum)
        drawn[:, members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)), size=resamples)
    return drawn[:, codes].astype(np.float64)


def bootstrap_intervals(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    *,
    groups: Sequence | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    calibration_bins: int = 10,
    stratified: bool = True,
) -> dict[str, Any]:
    """Percentile bootstrap intervals for every metric and confusion count, seeded.

    Returns `{"intervals": {metric: {"low", "high"}}, "undefined": {metric: resamples}}`; a
    resample where a metric is undefined (e.g. no predicted positives for precision) is left out
    of that metric only, and counted.
    """
    labels = np.asarray(labels).astype(int)
    rng = np.random.default_rng(seed)
    weights = bootstrap_weights(len(labels), resamples, rng, groups, labels if stratified else None)
    values = weighted_metrics(labels, probabilities, threshold, weights, calibration_bins)
    tail = 100.0 * (1.0 - confidence) / 2.0
    intervals, undefined = {}, {}
    for name in (*METRICS, *COUNTS):
        sample = values[name]
        missing = int(np.isnan(sample).sum())
        if missing:
            undefined[name] = missing
        if missing > resamples // 2:
            intervals[name] = None  # mostly undefined: an interval from the rest would mislead
            continue
        low, high = np.nanpercentile(sample, [tail, 100.0 - tail])
        intervals[name] = {"low": float(low), "high": float(high)}
    return {"intervals": intervals, "undefined": undefined}


def units_per_class(labels: np.ndarray, groups: Sequence | None = None) -> dict[str, int]:
    """Independent units of evidence per class: patients with a positive / a negative image, else images."""
    labels = np.asarray(labels).astype(int)
    codes = _group_codes(len(labels), groups)
    return {"positive": int(len(np.unique(codes[labels == 1]))), "negative": int(len(np.unique(codes[labels == 0])))}


def quality_tier(auc_low: float | None, tiers: Iterable[tuple[str, float]]) -> str:
    """The best tier whose minimum the lower bound of the AUC interval reaches; else `insufficient`."""
    if auc_low is None:
        return "insufficient"
    for name, minimum in sorted(tiers, key=lambda t: -t[1]):
        if auc_low >= minimum:
            return name
    return "insufficient"


def evaluate_scores(
    val_labels: np.ndarray,
    val_probabilities: np.ndarray,
    test_labels: np.ndarray,
    test_probabilities: np.ndarray,
    test_groups: Sequence | None = None,
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
    tier, reason = quality_tier(auc_low, settings.tiers), None
    if min(units.values()) < settings.min_per_class:
        tier = "insufficient"
        reason = (
            f"only {units['positive']} positive and {units['negative']} negative test {unit}s; "
            f"a tier needs {settings.min_per_class} of each"
        )
    elif auc_low is None:
        reason = "ROC AUC undefined"
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
                "groups": len(np.unique(_group_codes(len(test_labels), test_groups))),
                "units_per_class": units,
                "undefined_resamples": boot["undefined"],
            },
            "threshold": choice.value,
            "threshold_rule": choice.rule,
            "threshold_split": choice.split,
            "threshold_choice": asdict(choice),
            "evaluated_split": "test",
            "quality": {
                "tier": tier,
                "basis": "roc_auc interval lower bound",
                "value": auc_low,
                "reason": reason,
                "tiers": dict(settings.tiers),
                "min_per_class": settings.min_per_class,
                "note": CLINICAL_NOTE,
            },
        }
    )
    return metrics


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


def paired_auc_difference(
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    groups: Sequence | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """ROC AUC of two models on the same images and the interval of their difference, by paired bootstrap.

    Each resample draws patients (else images) with replacement, within each class as in
    `bootstrap_intervals`, and scores both models on the very same draw, so what the two have in
    common (which images happen to be hard) cancels out of the difference.
    """
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        raise MedcoreError("a paired ROC AUC comparison needs images of both classes")
    rng = np.random.default_rng(seed)
    weights = np.vstack([np.ones((1, len(labels))), bootstrap_weights(len(labels), resamples, rng, groups, labels)])
    new = weighted_metrics(labels, challenger, 0.5, weights)["roc_auc"]
    old = weighted_metrics(labels, champion, 0.5, weights)["roc_auc"]
    tail = 100.0 * (1.0 - confidence) / 2.0

    def bounds(sample: np.ndarray) -> tuple[float, float]:
        low, high = np.nanpercentile(sample, [tail, 100.0 - tail])
        return float(low), float(high)

    diff = new[1:] - old[1:]
    return {
        "n": int(len(labels)),
        "n_positive": int(labels.sum()),
        "unit": "patient" if groups is not None else "image",
        "units": len(np.unique(_group_codes(len(labels), groups))),
        "challenger_auc": float(new[0]),
        "champion_auc": float(old[0]),
        "delta": float(new[0] - old[0]),
        "low": bounds(diff)[0],
        "high": bounds(diff)[1],
        "challenger_interval": bounds(new[1:]),
        "champion_interval": bounds(old[1:]),
        "resamples": resamples,
        "confidence": confidence,
        "method": "paired stratified bootstrap",
    }


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


# --------------------------------------------------------------------------- plots


def png_bytes(figure) -> bytes:
    """Render a matplotlib `Figure` to PNG bytes with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)  # Agg, bound to this figure only: no pyplot state, no display needed
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _interval_text(metrics: dict[str, Any], name: str) -> str:
    value, interval = metrics.get(name), (metrics.get("intervals") or {}).get(name)
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ({interval['low']:.3f}–{interval['high']:.3f})" if interval else "")


def render_plots(
    labels: np.ndarray, probabilities: np.ndarray, metrics: dict[str, Any], title: str = "", calibration_bins: int = 10
) -> dict[str, bytes]:
    """ROC, PR, calibration and confusion-matrix plots as PNG bytes (nothing is written here)."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=float)
    both = len(np.unique(labels)) == 2
    return {
        "roc": _plot(lambda ax: _draw_roc(ax, labels, probabilities, metrics, both), f"ROC {title}", "lower right"),
        "pr": _plot(
            lambda ax: _draw_pr(ax, labels, probabilities, metrics, both), f"Precision-recall {title}", "lower left"
        ),
        "calibration": _plot(
            lambda ax: _draw_calibration(ax, labels, probabilities, metrics, calibration_bins),
            f"Calibration {title}",
            "upper left",
        ),
        "confusion": _plot(
            lambda ax: _draw_confusion(ax, metrics["confusion_matrix"]),
            f"Confusion at {metrics['threshold']:.3f} {title}",
            None,
            size=(4, 3.6),
        ),
    }


def _plot(draw: Callable[[Any], None], title: str, legend: str | None, size: tuple[float, float] = (4.5, 4.5)) -> bytes:
    """One figure: `draw` fills its axes, then the title and legend (at `legend`, if any) go on; PNG bytes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    ax = fig.add_subplot()
    draw(ax)
    ax.set(title=title.strip())
    if legend:
        ax.legend(loc=legend, fontsize=8)
    return png_bytes(fig)


def _draw_roc(ax, labels: np.ndarray, probabilities: np.ndarray, metrics: dict[str, Any], both: bool) -> None:
    from sklearn.metrics import roc_curve

    if both:
        fpr, tpr, _ = roc_curve(labels, probabilities)
        ax.plot(fpr, tpr, label=f"AUC {_interval_text(metrics, 'roc_auc')}")
        if metrics.get("recall") is not None and metrics.get("specificity") is not None:
            ax.plot(1 - metrics["specificity"], metrics["recall"], "o", label=f"threshold {metrics['threshold']:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.02))


def _draw_pr(ax, labels: np.ndarray, probabilities: np.ndarray, metrics: dict[str, Any], both: bool) -> None:
    from sklearn.metrics import precision_recall_curve

    if both:
        precision, recall, _ = precision_recall_curve(labels, probabilities)
        ax.step(recall, precision, where="post", label=f"AP {_interval_text(metrics, 'pr_auc')}")
        if metrics.get("precision") is not None and metrics.get("recall") is not None:
            ax.plot(metrics["recall"], metrics["precision"], "o", label=f"threshold {metrics['threshold']:.3f}")
    ax.axhline(labels.mean() if len(labels) else 0, ls=":", color="grey", label="prevalence")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))


def _draw_calibration(ax, labels: np.ndarray, probabilities: np.ndarray, metrics: dict[str, Any], bins: int) -> None:
    edges = np.linspace(0, 1, bins + 1)  # the bins the calibration error was measured on
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    filled = [b for b in range(bins) if (which == b).any()]
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.plot(
        [probabilities[which == b].mean() for b in filled],
        [labels[which == b].mean() for b in filled],
        "o-",
        label=f"ECE {_interval_text(metrics, 'calibration_error')}",
    )
    ax.bar(
        edges[:-1],
        [(which == b).mean() for b in range(bins)],
        width=1 / bins,
        align="edge",
        alpha=0.2,
        color="grey",
        label="share of images",
    )
    ax.set(xlabel="predicted probability", ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1.02))


def _draw_confusion(ax, cm: dict[str, int]) -> None:
    grid = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    ax.imshow(grid, cmap="Blues")
    for (row, col), count in np.ndenumerate(grid):
        ax.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if count > grid.max() / 2 else "black",
            fontsize=14,
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["negative", "positive"],
        yticklabels=["negative", "positive"],
        xlabel="predicted",
        ylabel="true",
    )


# --------------------------------------------------------------------------- scoring new images


def list_images(source: str | Path, column: str | None = None) -> list[Path]:
    """The images to score: every image file under a folder, or the paths in a CSV column.

    CSV paths may be relative to the CSV's folder. Raises MedcoreError naming what is missing.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(f for f in source.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise MedcoreError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return files
    if not source.is_file():
        raise MedcoreError(f"{source}: no such folder or CSV file")
    try:
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MedcoreError(f"{source}: cannot read as CSV: {str(exc).splitlines()[0]}") from None
    candidates = [column] if column else ["path", "image", "relpath"]
    found = next((c for c in candidates if c in table.columns), None)
    if found is None:
        raise MedcoreError(
            f"{source}: no column {' or '.join(repr(c) for c in candidates)} "
            f"(columns: {', '.join(map(str, table.columns))}); pick one with --column"
        )
    files = [p if p.is_absolute() else source.parent / p for p in (Path(v.strip()) for v in table[found])]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise MedcoreError(f"{source}: {len(missing)} of {len(files)} images not found, first {missing[0]}")
    if not files:
        raise MedcoreError(f"{source}: the CSV lists no images")
    return files


def refusals(files: Sequence[Path]) -> list[str]:
    """Why each file cannot be scored ("" if it can), by validation's own guards: the same strict JPEG decode,
    size limits read from the header before decoding (PNG, JPEG, DICOM incl. compressed) and decoding budget."""
    from medcore.data.validation import scan_files

    scans = scan_files([str(f) for f in files], [True] * len(files))
    return ["" if s.status == "ok" else f"{s.status}: {s.detail}".rstrip(": ") for s in scans]


def _first_undecodable(files: Sequence[Path]) -> Path | None:
    import tensorflow as tf

    from medcore.data.datasets import _is_dicom_file
    from medcore.data.dicom import load_pixels

    for file in files:
        try:
            if _is_dicom_file(str(file)):
                load_pixels(str(file))
            else:
                tf.io.decode_image(tf.io.read_file(str(file)), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, ValueError, OSError):
            return file
    return None


def predict_files(
    model, files: Sequence[Path], batch_size: int = 32, temperature: float = 1.0, resize: str = "squash"
) -> np.ndarray:
    """P(positive) = sigmoid(logit / temperature) for each file, decoded and resized exactly as in training."""
    import tensorflow as tf

    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise MedcoreError(f"model input shape {shape} is not a fixed square image")
    size = int(shape[1])
    frame = pd.DataFrame({"path": [str(f) for f in files], "label": np.zeros(len(files), np.float32)})
    profile = Profile("predict", image_size=size, batch_size=batch_size, execution="graph", resize=resize)
    try:
        return predict_probabilities(model, frame, profile, temperature)
    except tf.errors.InvalidArgumentError:
        bad = _first_undecodable(files)
        raise MedcoreError(f"{bad or files[0]}: cannot decode image") from None
