"""Figures of one split at one threshold: the threshold rules, the weighted metrics and their bootstrap intervals.

Contract. Scores are P(positive) in [0, 1]; labels are 1 (positive) or 0 (negative). Every figure
is computed by one weighted routine (`weighted_metrics`): the point estimate uses weight 1 per
image, and each bootstrap resample uses how often the resample drew the image (or its patient),
so the point estimate and its interval can never disagree about what a metric means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcore.config import METRICS
from medcore.errors import MedcoreError

__all__ = [
    "COUNTS",
    "ThresholdChoice",
    "youden_threshold",
    "sensitivity_threshold",
    "choose_threshold",
    "weighted_metrics",
    "binary_metrics",
    "group_codes",
    "bootstrap_weights",
    "bootstrap_intervals",
    "units_per_class",
    "quality_tier",
    "paired_auc_difference",
]

# The confusion counts get a point estimate and an interval too (METRICS: config.py).
COUNTS = ("tp", "tn", "fp", "fn")


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


def group_codes(n: int, groups: Sequence | np.ndarray | None) -> np.ndarray:
    """The group (patient) number of each of `n` images, 0..groups-1; each image its own group without `groups`."""
    if groups is None:
        return np.arange(n)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} images")
    return np.unique(np.asarray(groups).astype(str), return_inverse=True)[1].reshape(-1)


def bootstrap_weights(
    n: int,
    resamples: int,
    rng: np.random.Generator,
    groups: Sequence | np.ndarray | None = None,
    strata: Sequence | np.ndarray | None = None,
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
    codes = group_codes(n, groups)
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
    groups: Sequence | np.ndarray | None = None,
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
    intervals: dict[str, dict[str, float] | None] = {}
    undefined: dict[str, int] = {}
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


def units_per_class(labels: np.ndarray, groups: Sequence | np.ndarray | None = None) -> dict[str, int]:
    """Independent units of evidence per class: patients with a positive / a negative image, else images."""
    labels = np.asarray(labels).astype(int)
    codes = group_codes(len(labels), groups)
    return {"positive": int(len(np.unique(codes[labels == 1]))), "negative": int(len(np.unique(codes[labels == 0])))}


def quality_tier(auc_low: float | None, tiers: Iterable[tuple[str, float]]) -> str:
    """The best tier whose minimum the lower bound of the AUC interval reaches; else `insufficient`."""
    if auc_low is None:
        return "insufficient"
    for name, minimum in sorted(tiers, key=lambda t: -t[1]):
        if auc_low >= minimum:
            return name
    return "insufficient"


def paired_auc_difference(
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    groups: Sequence | np.ndarray | None = None,
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
        "units": len(np.unique(group_codes(len(labels), groups))),
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
