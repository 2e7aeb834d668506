"""Calibration: P(positive) from a logit at a temperature, the temperature fitted on val, and what it changed.

Temperature scaling (Guo et al. 2017) divides every logit by one number: it changes no ranking,
so ROC AUC is untouched, and only the stated probabilities move towards what is observed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medcore.assess.metrics import binary_metrics, bootstrap_intervals
from medcore.config import EvaluationSettings

__all__ = ["TEMPERATURE_BOUNDS", "sigmoid", "fit_temperature", "calibration_report"]


def sigmoid(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(positive) = sigmoid(logit / temperature), computed without overflow."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return np.exp(-np.logaddexp(0.0, -z))


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
    groups: Sequence | np.ndarray | None = None,
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
