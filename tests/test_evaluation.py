"""Metrics against values worked out by hand, and the val-only threshold."""

from __future__ import annotations

import numpy as np
import pytest

from medcore.evaluation import binary_metrics, youden_threshold


def test_metrics_match_hand_computed_values():
    """TP=2, FN=1, TN=3, FP=1 at threshold 0.5 gives the textbook ratios."""
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    probs = np.array([0.9, 0.8, 0.2, 0.7, 0.3, 0.1, 0.4])
    m = binary_metrics(labels, probs, 0.5)
    assert m["confusion_matrix"] == {"tp": 2, "fn": 1, "tn": 3, "fp": 1}
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 / 3)
    # AUC: of the 12 (positive, negative) pairs the positive scores higher in 9 (0.2 beats only 0.1)
    assert m["roc_auc"] == pytest.approx(9 / 12)


def test_single_class_has_no_auc():
    """With one class present AUC is undefined and reported as None, not a crash."""
    assert binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]), 0.5)["roc_auc"] is None


def test_youden_threshold_separates_perfectly_separable_scores():
    """On separable scores the Youden threshold sits between the classes."""
    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([0.1, 0.2, 0.35, 0.6, 0.8])
    threshold = youden_threshold(labels, probs)
    assert 0.35 < threshold <= 0.6
    assert binary_metrics(labels, probs, threshold)["accuracy"] == 1.0
    assert youden_threshold(np.array([1, 1]), np.array([0.3, 0.4])) == 0.5
