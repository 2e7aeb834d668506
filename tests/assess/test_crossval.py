"""Small sets: folds that keep patients apart, figures from pooled out-of-fold predictions, the pipeline's switch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medcore.assess import crossval, evaluation
from medcore.config import EvaluationSettings


def _frame(patients: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        label = int(p % 3 == 0)  # imbalanced, as knee osteoporosis is
        for image in range(1 + int(rng.integers(0, 3))):
            rows.append(
                {
                    "relpath": f"p{p}/i{image}.png",
                    "path": f"/x/p{p}/i{image}.png",
                    "label": label,
                    "group": f"p{p}",
                    "split": "train",
                }
            )
    return pd.DataFrame(rows)


def test_each_image_is_held_out_once_per_repeat_and_patients_never_straddle():
    frame = _frame()
    splits = crossval.fold_splits(frame, folds=3, repeats=2, seed=1)
    assert len(splits) == 6
    for repeat in (0, 1):
        held = pd.concat([s[s["split"] == "test"] for r, _, s in splits if r == repeat])
        assert sorted(held["relpath"]) == sorted(frame["relpath"])  # once each, none twice
    for _, _, split in splits:
        by_group = split.groupby("group")["split"].nunique()
        assert (by_group == 1).all(), "a patient's images must all sit in one of train / val / test"
        for role in ("train", "val", "test"):
            assert split.loc[split["split"] == role, "label"].nunique() == 2  # stratified: both classes everywhere


def test_small_test_split_switches_to_cross_validation():
    settings = EvaluationSettings(min_per_class=10)
    frame = _frame(60)
    frame.loc[frame.index[:12], "split"] = "test"
    assert crossval.needs_cross_validation(frame, settings)
    frame["split"] = "test"
    assert not crossval.needs_cross_validation(frame, settings)  # 20 positive, 40 negative patients
    assert not crossval.needs_cross_validation(
        frame.iloc[:12], EvaluationSettings(min_per_class=10, small_sets="test_split")
    )


def test_pooled_figures_average_repeats_fit_on_inner_val_and_resample_patients(monkeypatch):
    frame = _frame(40, seed=2)
    rng = np.random.default_rng(3)
    rows = []
    for repeat in (0, 1):
        held = frame.assign(
            logit=rng.normal(0, 1, len(frame)) + 2.0 * frame["label"], role="held_out", repeat=repeat, fold=0
        )
        inner = frame.iloc[:20].assign(
            logit=rng.normal(0, 1, 20) + 2.0 * frame["label"].iloc[:20], role="inner_val", repeat=repeat, fold=1
        )
        rows += [held, inner]
    predictions = pd.concat(rows, ignore_index=True)
    seen = []
    real = evaluation.choose_threshold
    monkeypatch.setattr(
        evaluation,
        "choose_threshold",
        lambda labels, probs, *a, **k: seen.append(len(labels)) or real(labels, probs, *a, **k),
    )
    metrics, pooled = crossval.crossval_metrics(predictions, EvaluationSettings(min_per_class=5))
    assert seen == [40]  # the inner val rows of both repeats, never the out-of-fold ones
    assert metrics["n"] == len(frame) and (pooled["repeats"] == 2).all()
    mean_logit = predictions[predictions["role"] == "held_out"].groupby("relpath")["logit"].mean()
    assert pooled.set_index("relpath")["logit"].to_dict() == pytest.approx(mean_logit.to_dict())
    assert metrics["bootstrap"]["unit"] == "patient" and metrics["bootstrap"]["groups"] == 40
    assert metrics["estimate"] == "cross-validation" and metrics["quality"]["tier"] != "n/a"


@pytest.mark.slow
def test_knee_osteoporosis_is_cross_validated_and_the_shipped_model_sees_all_data(tiny_config, tmp_path):
    """Through the stages: fold models, pooled figures on every image, a shipped model trained on train + test."""
    from medcore import pipeline
    from medcore.config import load_config
    from medcore.jsonio import read_json
    from medcore.layout import RunLayout

    config_path = tmp_path / "cv.yaml"
    config_path.write_text(
        f"extends: {tiny_config}\nevaluation: {{small_sets: crossval, crossval_folds: 2, crossval_repeats: 1}}\n"
    )
    config = load_config(config_path)
    job = {
        "run_id": "cv",
        "runs_root": str(config.runs_root),
        "config": str(config.path),
        "condition": "knee_osteoporosis",
        "profile": "standard",
        "epochs": 1,
    }
    pipeline.validate(job)
    paths = RunLayout(config.runs_root, "cv").model("knee_osteoporosis", "standard")
    split = pd.read_csv(paths.split_csv)
    pipeline.train(job)
    pipeline.evaluate(job)
    logits = pd.read_csv(paths.crossval_csv)
    held = logits[logits["role"] == "held_out"]
    assert sorted(held["relpath"]) == sorted(split["relpath"])  # every image scored out of fold, once
    metrics = read_json(paths.metrics_json)
    assert metrics["estimate"] == "cross-validation" and metrics["n"] == len(split)
    training = read_json(paths.training_json)
    assert training["estimate"] == "cross-validation"
    assert training["train_images"] == int((split["split"] != "val").sum())  # train + test
    assert read_json(paths.model_contract)["estimate"] == "cross-validation"
