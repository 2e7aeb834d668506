"""The evaluate and gradcam stages: measure the model on its test split, compare it with the champion, explain it."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcore.config import Config
from medcore.errors import MedcoreError, StageError, one_line
from medcore.jsonio import atomic_write_text, write_json
from medcore.layout import ModelLayout
from medcore.pipeline.stage import Job, read_split, require, stage

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["evaluate", "gradcam"]

log = logging.getLogger("medcore.pipeline")


@stage("evaluate")
def evaluate(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Pick the threshold on val, measure test with bootstrap intervals; write metrics, predictions, plots.

    The chosen threshold also goes into the model contract (model.json), so `medcore predict`
    and anyone scoring new images apply the same decision rule the metrics describe.
    """
    from medcore.assess.evaluation import evaluate_model_splits, load_model
    from medcore.data.datasets import read_studies
    from medcore.model.contract import read_contract, record_evaluation

    # Checked first: the threshold chosen here is written into this contract, which must be this model's.
    contract = read_contract(require(paths.model, "train"), paths.model_contract)
    if contract is None:  # train renames the model before writing its contract: a crash in between
        raise StageError(f"{paths.model_contract}: missing beside the model; the train stage did not finish")
    model = load_model(paths.model, eager=profile.execution == "eager")
    split = read_split(paths)
    studies = read_studies(config, condition)
    if studies:  # MURA labels studies: the figures that compare with its published ones are per study
        split["study"] = split["relpath"].map(studies).fillna(split["relpath"])
    if paths.crossval_csv.exists():  # a small set: figures from the pooled out-of-fold predictions
        metrics, predictions, val_predictions = _crossval_figures(config, profile, model, split, paths)
    else:
        metrics, predictions, val_predictions = evaluate_model_splits(
            model, split, profile, config.evaluation, seed=config.seed, study_aggregation=condition.study_aggregation
        )
        metrics["versus_champion"] = _versus_champion(
            config, condition.name, split, paths, val_predictions, predictions
        )
    atomic_write_text(paths.val_predictions_csv, val_predictions.to_csv(index=False))
    if condition.reference:
        metrics["reference"] = condition.reference
    metrics["plots"] = _write_plots(config, condition.name, profile.name, predictions, metrics, paths)
    metrics["model_path"] = paths.model
    atomic_write_text(paths.predictions_csv, predictions.to_csv(index=False))
    write_json(paths.metrics_json, metrics)

    record_evaluation(paths.model_contract, contract, metrics, paths.metrics_json)
    _write_card(config, condition, profile, paths)
    return job


def _crossval_figures(config: Config, profile, model, split: pd.DataFrame, paths: ModelLayout):
    """(metrics, predictions, val predictions) of a small set: figures from the pooled out-of-fold predictions,
    while the shipped model (trained on all the data) gets its own temperature and threshold from its val split."""
    import pandas as pd

    from medcore.assess.crossval import crossval_metrics
    from medcore.assess.evaluation import (
        calibration_report,
        choose_threshold,
        fit_temperature,
        predict_logits,
        selection_figures,
        sigmoid,
    )

    metrics, predictions = crossval_metrics(
        pd.read_csv(paths.crossval_csv, dtype={"group": str, "relpath": str}), config.evaluation, seed=config.seed
    )
    metrics["calibration"] = calibration_report(
        predictions["label"].to_numpy(),
        predictions["logit"].to_numpy(),
        metrics["temperature"],
        groups=predictions["group"].to_numpy(),
        settings=config.evaluation,
        seed=config.seed,
    )
    # The shipped model scores new images: its own temperature and threshold, fitted on its val split.
    val = split[split["split"] == "val"].reset_index(drop=True)
    val_logits = predict_logits(model, val, profile)
    shipped_t = fit_temperature(val["label"].to_numpy(), val_logits) if config.evaluation.calibrate else 1.0
    shipped = choose_threshold(
        val["label"].to_numpy(),
        sigmoid(val_logits, shipped_t),
        config.evaluation.threshold_rule,
        config.evaluation.target_sensitivity,
    )
    metrics["shipped_model"] = {"temperature": shipped_t, "threshold": shipped.value, "threshold_split": "val"}
    val_predictions = val[["relpath", "path", "label", "group"]].assign(probability=sigmoid(val_logits, shipped_t))
    # Decisions read the shipped model's own val figures; its out-of-fold test figures are not one model's.
    metrics["selection"] = selection_figures(
        val, val_predictions["probability"].to_numpy(), config.evaluation, config.seed
    )
    metrics["versus_champion"] = None
    return metrics, predictions, val_predictions


def _write_plots(
    config: Config, condition: str, profile: str, predictions: pd.DataFrame, metrics: dict, paths: ModelLayout
) -> dict[str, Path]:
    """ROC, PR, calibration and confusion plots, per image (as predictions.csv) at the image-level threshold."""
    from medcore.assess.evaluation import render_plots
    from medcore.jsonio import atomic_write_bytes

    plots = render_plots(
        predictions["label"].to_numpy(),
        predictions["probability"].to_numpy(),
        metrics.get("image_level", metrics),
        f"{condition}/{profile}",
        config.evaluation.calibration_bins,
    )
    for name, png in plots.items():
        atomic_write_bytes(paths.plot(name), png)
    return {name: paths.plot(name) for name in plots}


def _versus_champion(
    config: Config,
    condition: str,
    split: pd.DataFrame,
    paths: ModelLayout,
    val_predictions: pd.DataFrame,
    test_predictions: pd.DataFrame,
) -> dict[str, Any] | None:
    """Re-score the champion (inference only) on this chain's val and test images and compare paired.

    The selection comparison decides promotion; the test comparison is only reported. None when
    there is no champion; `champion_missing` says why when its model cannot be scored.
    """
    import pandas as pd

    from medcore.assess.evaluation import load_model, predict_probabilities
    from medcore.nights.registry import champion_id, read_record, registry_of

    champion = read_record(registry_of(config), condition).get("champion")
    if not champion:
        return None
    result: dict[str, Any] = {"champion": champion_id(champion), "champion_promoted": champion.get("promoted")}
    path = Path(champion.get("model_path") or "")
    try:
        model = load_model(path)
        size = int(model.inputs[0].shape[1])
    except Exception as exc:  # noqa: BLE001 noqa: BLE001 - a champion that cannot be loaded must not fail tonight's model
        return {**result, "champion_missing": f"{path}: {one_line(exc)}"}
    scorer = _with_size(config.profiles[paths.profile], size)
    try:  # the champion is scored as it was trained: its own resize (squash or pad), from its contract
        from medcore.model.contract import read_contract

        resize = (read_contract(path, champion.get("contract_path")) or {}).get("resize", "squash")
        scorer = dataclasses.replace(scorer, resize=resize if resize in ("squash", "pad") else "squash")
    except MedcoreError as exc:
        return {**result, "champion_missing": f"{path}: {one_line(exc)}"}
    scored = []
    for name, ours in (("selection", val_predictions), ("test", test_predictions)):
        rows = split[split["split"] == ("val" if name == "selection" else "test")].reset_index(drop=True)
        theirs = predict_probabilities(model, rows, scorer)
        scored.append(
            pd.DataFrame(
                {"relpath": rows["relpath"], "split": rows["split"], "label": rows["label"], "probability": theirs}
            )
        )
        result.update(_paired(config, name, rows, ours["probability"].to_numpy(), theirs))
    atomic_write_text(paths.champion_predictions_csv, pd.concat(scored).to_csv(index=False))
    return result


def _paired(config: Config, name: str, rows: pd.DataFrame, ours, theirs) -> dict[str, Any]:
    """{name: the paired AUC difference, ours minus the champion's, resampled by patient}, or why there is none."""
    from medcore.assess.evaluation import paired_auc_difference

    groups = rows["group"].astype(str).to_numpy() if "group" in rows.columns else None
    try:
        return {
            name: paired_auc_difference(
                rows["label"].to_numpy(),
                ours,
                theirs,
                groups,
                config.evaluation.bootstrap_resamples,
                config.evaluation.confidence,
                seed=config.seed,
            )
        }
    except MedcoreError as exc:
        return {name: None, f"{name}_problem": str(exc)}


def _with_size(profile, size: int):
    """`profile` scoring at another image size (the champion's input size)."""
    if hasattr(profile, "model_copy"):
        return profile.model_copy(update={"image_size": size})
    return dataclasses.replace(profile, image_size=size)


def _write_card(config: Config, condition, profile, paths: ModelLayout) -> None:
    """model_card.md from the artefacts so far; written after evaluate and again after Grad-CAM."""
    from medcore.assess.model_card import write_model_card

    write_model_card(config, condition, profile, paths)


@stage("gradcam")
def gradcam(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Overlays of the most confident TP/TN/FP/FN test images, a contact sheet, and the deletion test."""
    from medcore.assess.gradcam import explain_model

    require(paths.model, "train")
    require(paths.predictions_csv, "evaluate")
    explain_model(paths, config.gradcam, f"{condition.name}/{profile.name}")
    _write_card(config, condition, profile, paths)
    return job
