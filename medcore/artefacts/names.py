"""The metric names, declared once: config, evaluation, the registry and the tests' fakes import them from here."""

from __future__ import annotations

__all__ = ["METRICS", "GATE_METRICS", "SELECTION_FIGURES", "KEPT_FIGURES"]


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
