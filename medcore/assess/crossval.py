"""Small sets: estimate performance by repeated stratified group k-fold cross-validation.

A test split of nine images says nothing (knee osteoporosis: an AUC interval of 0.05-0.80). Where
the test split would hold fewer patients of a class than `evaluation.min_per_class`, every image is
scored once per repeat by a model that never saw its patient: the folds are stratified by label and
keep each patient in one fold. The out-of-fold logits of the repeats are averaged per image and
pooled, and the figures are measured on that pool with the same weighted bootstrap (resampling
patients) as a test split. Each fold model selects its epoch on an inner val split carved from its
training folds; the temperature and the threshold are fitted on those inner val predictions, never
on the out-of-fold ones. The shipped model is trained on all the data (train and test, selecting
its epoch on val), so the figures estimate how a model trained this way does, not that one model.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from medcore.config import Config, EvaluationSettings, Profile
from medcore.layout import ModelLayout

__all__ = ["needs_cross_validation", "fold_splits", "cross_validate", "crossval_metrics", "all_data_split"]

log = logging.getLogger(__name__)


def _units(frame: pd.DataFrame) -> dict[int, int]:
    """Patients (groups) per class, or images where no group is known."""
    key = frame["group"] if "group" in frame.columns else frame["relpath"]
    return {label: int(key[frame["label"] == label].nunique()) for label in (0, 1)}


def needs_cross_validation(split: pd.DataFrame, settings: EvaluationSettings) -> bool:
    """True where the test split holds fewer test patients (else images) of a class than `min_per_class`."""
    if settings.small_sets != "crossval":
        return False
    return min(_units(split[split["split"] == "test"]).values()) < settings.min_per_class


def fold_splits(frame: pd.DataFrame, folds: int, repeats: int, seed: int) -> list[tuple[int, int, pd.DataFrame]]:
    """(repeat, fold, split) per model: the fold is `test`, an inner val is carved from the rest by patient."""
    from sklearn.model_selection import StratifiedGroupKFold

    frame = frame.reset_index(drop=True)
    labels, groups = frame["label"].to_numpy(), frame["group"].astype(str).to_numpy()
    out = []
    for repeat in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + repeat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class" on small sets
            parts = list(splitter.split(np.zeros(len(frame)), labels, groups))
        for fold, (rest, held) in enumerate(parts):
            split = frame.copy()
            split["split"] = "train"
            split.loc[held, "split"] = "test"
            inner = split.loc[rest]
            val = _inner_val(inner, max(folds - 1, 2), seed + 1000 * repeat + fold)
            split.loc[inner.index[val], "split"] = "val"
            out.append((repeat, fold, split))
    return out


def _inner_val(frame: pd.DataFrame, n_splits: int, seed: int) -> np.ndarray:
    """A mask of about 1/`n_splits` of `frame` (whole patients, stratified) for a fold model's epoch and threshold."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = frame["label"].to_numpy(), frame["group"].astype(str).to_numpy()
    overall = labels.mean()
    splitter = StratifiedGroupKFold(n_splits=min(n_splits, len(np.unique(groups))), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # With few patients a fold can miss a class: take the one most like the whole.
        held = min(
            (h for _, h in splitter.split(np.zeros(len(frame)), labels, groups)),
            key=lambda h: (len(np.unique(labels[h])) < 2, abs(labels[h].mean() - overall)),
        )
    mask = np.zeros(len(frame), dtype=bool)
    mask[held] = True
    return mask


def all_data_split(split: pd.DataFrame) -> pd.DataFrame:
    """The shipped model's split: train and test images both train; val stays val (epoch, temperature, threshold)."""
    split = split.copy()
    split.loc[split["split"] == "test", "split"] = "train"
    return split


def cross_validate(
    config: Config, profile: Profile, split: pd.DataFrame, paths: ModelLayout, epochs: int | None = None
) -> pd.DataFrame:
    """Train one model per (repeat, fold); return every held-out and inner-val logit with its role."""
    from medcore.assess.predict import load_model, predict_logits
    from medcore.model.training import train_model

    settings = config.evaluation
    rows = []
    for repeat, fold, fold_split in fold_splits(split, settings.crossval_folds, settings.crossval_repeats, config.seed):
        fold_paths = ModelLayout(paths.crossval_dir / f"r{repeat}_f{fold}", paths.condition, paths.profile)
        if not fold_paths.model.exists():  # written whole at the end: a retried task skips finished folds
            train_model(config, profile, fold_split, fold_paths, epochs=epochs)
        model = load_model(fold_paths.model, eager=profile.execution == "eager")
        for role in ("test", "val"):
            part = fold_split[fold_split["split"] == role]
            rows.append(
                part[["relpath", "path", "label", "group"]].assign(
                    logit=predict_logits(model, part, profile),
                    role="held_out" if role == "test" else "inner_val",
                    repeat=repeat,
                    fold=fold,
                )
            )
        log.info("cross-validation %s/%s: repeat %d fold %d done", paths.condition, paths.profile, repeat + 1, fold + 1)
    return pd.concat(rows, ignore_index=True)


def crossval_metrics(
    predictions: pd.DataFrame, settings: EvaluationSettings = EvaluationSettings(), seed: int = 0
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Figures of the pooled out-of-fold predictions, with intervals resampling patients; and the pool per image.

    The temperature and threshold come from the inner val predictions; each image's out-of-fold
    logit is the mean over repeats.
    """
    from medcore.assess.calibration import fit_temperature, sigmoid
    from medcore.assess.evaluation import evaluate_scores

    inner = predictions[predictions["role"] == "inner_val"]
    held = predictions[predictions["role"] == "held_out"]
    pooled = (
        held.groupby("relpath", sort=True)
        .agg(
            path=("path", "first"),
            label=("label", "first"),
            group=("group", "first"),
            logit=("logit", "mean"),
            repeats=("logit", "size"),
        )
        .reset_index()
    )
    temperature = fit_temperature(inner["label"].to_numpy(), inner["logit"].to_numpy()) if settings.calibrate else 1.0
    probabilities = sigmoid(pooled["logit"].to_numpy(), temperature)
    metrics = evaluate_scores(
        inner["label"].to_numpy(),
        sigmoid(inner["logit"].to_numpy(), temperature),
        pooled["label"].to_numpy(),
        probabilities,
        pooled["group"].astype(str).to_numpy(),
        settings,
        seed,
    )
    metrics.update(
        {
            "estimate": "cross-validation",
            "evaluated_split": "pooled out-of-fold (every image, by a model that never saw its patient)",
            "threshold_split": "inner val of the fold models",
            "temperature": temperature,
            "crossval": {
                "folds": settings.crossval_folds,
                "repeats": settings.crossval_repeats,
                "models": int(held[["repeat", "fold"]].drop_duplicates().shape[0]),
                "stratified_group_kfold": True,
                "shipped_model": "trained on all the data (train + test), "
                "epoch selected on val; the figures estimate this recipe, not that one model",
            },
        }
    )
    pooled_predictions = pooled.assign(
        probability=probabilities,
        predicted=(probabilities >= metrics["threshold"]).astype(int),
        probability_uncalibrated=sigmoid(pooled["logit"].to_numpy()),
    )
    return metrics, pooled_predictions
