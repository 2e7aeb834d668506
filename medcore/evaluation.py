"""Held-out evaluation: a threshold chosen on val, metrics measured on test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medcore.config import Profile
from medcore.datasets import make_dataset

__all__ = ["load_model", "predict_probabilities", "youden_threshold", "binary_metrics", "evaluate_model"]


def load_model(path, eager: bool = False):
    """Load a `.keras` model in Keras safe mode (no arbitrary code from the file)."""
    import keras

    model = keras.models.load_model(path, safe_mode=True, compile=False)
    model.run_eagerly = eager
    return model


def predict_probabilities(model, frame: pd.DataFrame, profile: Profile) -> np.ndarray:
    """Return P(positive) for every row of `frame`, in order."""
    import tensorflow as tf

    data = make_dataset(frame, profile, training=False, seed=0).map(lambda image, label: image)
    if profile.execution == "eager":
        logits = np.concatenate([model(batch, training=False).numpy() for batch in data])
    else:
        logits = model.predict(data, verbose=0)
    return tf.math.sigmoid(logits.reshape(-1).astype(np.float32)).numpy()


def youden_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Return the threshold maximising sensitivity + specificity - 1 (0.5 when undefined)."""
    from sklearn.metrics import roc_curve

    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(thresholds[best], 0.0, 1.0))


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, precision, recall, specificity, F1, ROC AUC and the confusion matrix at `threshold`."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    both_classes = len(np.unique(labels)) == 2
    return {
        "n": int(len(labels)),
        "accuracy": accuracy_score(labels, predicted),
        "precision": precision_score(labels, predicted, zero_division=0),
        "recall": recall_score(labels, predicted, zero_division=0),
        "specificity": tn / (tn + fp) if (tn + fp) else None,
        "f1": f1_score(labels, predicted, zero_division=0),
        "roc_auc": roc_auc_score(labels, probabilities) if both_classes else None,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


def evaluate_model(model, split: pd.DataFrame, profile: Profile) -> tuple[dict[str, Any], pd.DataFrame]:
    """Pick the threshold on val, apply it to test; return metrics and per-image test predictions."""
    val = split[split["split"] == "val"]
    test = split[split["split"] == "test"].reset_index(drop=True)
    threshold = youden_threshold(val["label"].to_numpy(), predict_probabilities(model, val, profile))
    probabilities = predict_probabilities(model, test, profile)
    metrics = binary_metrics(test["label"].to_numpy(), probabilities, threshold)
    metrics.update({"threshold": threshold, "threshold_rule": "youden_j", "threshold_split": "val",
                    "evaluated_split": "test"})
    predictions = pd.DataFrame({
        "relpath": test["relpath"], "path": test["path"], "label": test["label"].astype(int),
        "probability": probabilities, "predicted": (probabilities >= threshold).astype(int),
    })
    return metrics, predictions
