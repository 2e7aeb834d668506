"""Metrics against values worked out by hand, bootstrap intervals, the val-only threshold, plots and predict."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from medcore.assess import evaluation, predict
from medcore.assess.evaluation import (
    binary_metrics,
    bootstrap_intervals,
    bootstrap_weights,
    choose_threshold,
    evaluate_scores,
    quality_tier,
    render_plots,
    sensitivity_threshold,
    weighted_metrics,
    youden_threshold,
)
from medcore.config import EvaluationSettings, load_config
from medcore.errors import ConfigError, MedcoreError
from tests.conftest import ROOT, write_yaml

LABELS = np.array([1, 1, 1, 0, 0, 0, 0])
PROBS = np.array([0.9, 0.8, 0.2, 0.7, 0.3, 0.1, 0.4])


def _scores(rng: np.random.Generator, n: int, separation: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels with logistic scores whose classes overlap by `separation`."""
    labels = np.arange(n) % 2
    logits = rng.normal(0.0, 1.0, n) + separation * (labels - 0.5)
    return labels, 1.0 / (1.0 + np.exp(-logits))


# --------------------------------------------------------------------------- point estimates


def test_metrics_match_hand_computed_values():
    """TP=2, FN=1, TN=3, FP=1 at threshold 0.5 gives the textbook ratios."""
    m = binary_metrics(LABELS, PROBS, 0.5)
    assert m["confusion_matrix"] == {"tp": 2, "fn": 1, "tn": 3, "fp": 1}
    assert (m["n"], m["n_positive"]) == (7, 3)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 / 3)
    # AUC: of the 12 (positive, negative) pairs the positive scores higher in 9 (0.2 beats only 0.1)
    assert m["roc_auc"] == pytest.approx(9 / 12)
    # Ranked 0.9+ 0.8+ 0.7- 0.4- 0.3- 0.2+ 0.1-: precision 1/1, 2/2, 3/6 at the three positives
    assert m["pr_auc"] == pytest.approx((1 + 1 + 1 / 2) / 3)
    # Brier: squared errors 0.01 0.04 0.64 0.49 0.09 0.01 0.16
    assert m["brier"] == pytest.approx(1.44 / 7)
    # Each image sits alone in its tenth of [0, 1], so ECE is the mean absolute error: 2.6 / 7
    assert m["calibration_error"] == pytest.approx(2.6 / 7)


def test_ties_count_half_in_auc():
    """One positive and one negative with the same score: AUC 0.5, not 0 or 1."""
    assert binary_metrics(np.array([1, 0]), np.array([0.6, 0.6]), 0.5)["roc_auc"] == pytest.approx(0.5)


def test_single_class_has_no_auc():
    """With one class present AUC is undefined and reported as None, not a crash."""
    m = binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]), 0.5)
    assert m["roc_auc"] is None and m["pr_auc"] is None and m["specificity"] is None


def test_empty_denominator_is_none_not_zero():
    """No predicted positives leaves precision undefined (None) instead of a misleading 0."""
    m = binary_metrics(np.array([1, 0, 0]), np.array([0.1, 0.2, 0.3]), 0.9)
    assert m["precision"] is None and m["recall"] == 0.0 and m["f1"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_metrics_agree_with_sklearn(seed):
    """Bootstrap-style integer weights give sklearn's weighted AUC, average precision and Brier score."""
    rng = np.random.default_rng(seed)
    labels, probs = _scores(rng, 60)
    probs = np.round(probs, 1)  # many ties, the hard case for rank formulas
    weights = rng.integers(0, 3, size=(4, 60)).astype(float)
    got = weighted_metrics(labels, probs, 0.5, weights)
    for row, w in enumerate(weights):
        assert got["roc_auc"][row] == pytest.approx(roc_auc_score(labels, probs, sample_weight=w))
        assert got["pr_auc"][row] == pytest.approx(average_precision_score(labels, probs, sample_weight=w))
        assert got["brier"][row] == pytest.approx(brier_score_loss(labels, probs, sample_weight=w))


# --------------------------------------------------------------------------- thresholds


def test_youden_threshold_separates_perfectly_separable_scores():
    """On separable scores the Youden threshold sits between the classes."""
    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([0.1, 0.2, 0.35, 0.6, 0.8])
    threshold = youden_threshold(labels, probs)
    assert 0.35 < threshold <= 0.6
    assert binary_metrics(labels, probs, threshold)["accuracy"] == 1.0
    assert youden_threshold(np.array([1, 1]), np.array([0.3, 0.4])) == 0.5


@pytest.mark.parametrize(
    "target, expected_sensitivity, expected_specificity",
    [
        (0.5, 0.5, 1.0),  # 0.9 and 0.8 are enough: cut between 0.8 and 0.7
        (0.75, 0.75, 0.75),  # must also take 0.6, which lets the 0.7 negative through
        (1.0, 1.0, 0.5),  # the 0.3 positive forces the cut below two negatives
    ],
)
def test_sensitivity_threshold_is_the_highest_reaching_target(target, expected_sensitivity, expected_specificity):
    """The sensitivity rule keeps as much specificity as the target sensitivity allows."""
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    probs = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1])
    choice = choose_threshold(labels, probs, "sensitivity", target)
    assert (choice.sensitivity, choice.specificity) == (
        pytest.approx(expected_sensitivity),
        pytest.approx(expected_specificity),
    )
    assert choice.value == sensitivity_threshold(labels, probs, target)
    assert choice.rule == "sensitivity" and choice.target_sensitivity == target


def test_threshold_is_never_fitted_on_test():
    """The threshold depends on val only: changing test labels and scores never moves it."""
    rng = np.random.default_rng(5)
    val_labels, val_probs = _scores(rng, 80)
    test_labels, test_probs = _scores(rng, 80)
    first = evaluate_scores(val_labels, val_probs, test_labels, test_probs, seed=1)
    shuffled = evaluate_scores(val_labels, val_probs, rng.permutation(test_labels), rng.random(80), seed=1)
    assert first["threshold"] == shuffled["threshold"] == youden_threshold(val_labels, val_probs)
    assert first["threshold_split"] == "val" and first["evaluated_split"] == "test"
    assert first["threshold_choice"]["n"] == 80  # what it achieved on val is recorded beside it


def test_evaluate_model_passes_only_val_to_the_threshold(monkeypatch):
    """Through the stage entry point, the rule sees the val rows and the metrics see the test rows."""
    split = pd.DataFrame(
        {
            "split": ["train"] * 4 + ["val"] * 4 + ["test"] * 6,
            "label": [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0],
            "score": [0.5, 0.5, 0.5, 0.5, 0.2, 0.9, 0.3, 0.8, 0.1, 0.7, 0.6, 0.4, 0.95, 0.05],
        }
    )
    split["relpath"] = split["path"] = [f"img{i}.png" for i in range(len(split))]
    split["group"] = ["p1", "p1", "p2", "p2", "p3", "p4", "p5", "p6", "p7", "p7", "p8", "p8", "p9", "p10"]
    logit = np.log(split["score"] / (1 - split["score"]))
    by_path = dict(zip(split["path"], logit))
    monkeypatch.setattr(
        evaluation, "predict_logits", lambda model, frame, profile: frame["path"].map(by_path).to_numpy()
    )
    seen, fitted = [], []
    real, real_fit = evaluation.choose_threshold, evaluation.fit_temperature
    monkeypatch.setattr(
        evaluation,
        "choose_threshold",
        lambda labels, probs, *a, **k: seen.append((list(labels), list(probs))) or real(labels, probs, *a, **k),
    )
    monkeypatch.setattr(
        evaluation, "fit_temperature", lambda labels, logits: fitted.append(list(labels)) or real_fit(labels, logits)
    )
    metrics, predictions = evaluation.evaluate_model(None, split, None)
    assert fitted == [[0, 1, 0, 1]]  # the temperature too is fitted on val only
    calibrated = list(evaluation.sigmoid(logit[4:8], metrics["temperature"]))
    assert seen and all(labels == [0, 1, 0, 1] and probs == pytest.approx(calibrated) for labels, probs in seen), (
        "thresholds only ever on val"
    )
    assert predictions["probability"].to_numpy() == pytest.approx(evaluation.sigmoid(logit[8:], metrics["temperature"]))
    assert metrics["selection"]["n"] == 4 and metrics["selection"]["split"] == "val"
    assert metrics["n"] == 6 and list(predictions["relpath"]) == [f"img{i}.png" for i in range(8, 14)]
    assert metrics["bootstrap"]["unit"] == "patient" and metrics["bootstrap"]["groups"] == 4


# --------------------------------------------------------------------------- intervals and tiers


def test_intervals_cover_the_point_estimate_and_are_seeded():
    """Every interval brackets its point estimate, and the same seed gives the same interval."""
    rng = np.random.default_rng(11)
    labels, probs = _scores(rng, 200)
    point = binary_metrics(labels, probs, 0.5)
    boot = bootstrap_intervals(labels, probs, 0.5, resamples=1000, seed=3)
    for name in evaluation.METRICS:
        interval = boot["intervals"][name]
        assert interval["low"] <= point[name] <= interval["high"], name
    for name, value in point["confusion_matrix"].items():
        assert boot["intervals"][name]["low"] <= value <= boot["intervals"][name]["high"], name
    assert bootstrap_intervals(labels, probs, 0.5, resamples=1000, seed=3) == boot
    assert bootstrap_intervals(labels, probs, 0.5, resamples=1000, seed=4) != boot


def test_intervals_shrink_with_more_data():
    """Sixteen times the images gives an AUC interval about four times narrower."""
    rng = np.random.default_rng(12)
    widths = []
    for n in (60, 960):
        labels, probs = _scores(rng, n)
        interval = bootstrap_intervals(labels, probs, 0.5, resamples=1000, seed=0)["intervals"]["roc_auc"]
        widths.append(interval["high"] - interval["low"])
    assert widths[1] < widths[0] / 2.5


def test_grouped_bootstrap_does_not_count_a_patient_twice():
    """Four copies of each patient's image narrow an image-level interval falsely; the grouped one is not fooled."""
    rng = np.random.default_rng(13)
    labels, probs = _scores(rng, 80)
    copies = np.repeat(np.arange(80), 4)
    honest = bootstrap_intervals(labels, probs, 0.5, seed=0)["intervals"]["roc_auc"]
    naive = bootstrap_intervals(labels[copies], probs[copies], 0.5, seed=0)["intervals"]["roc_auc"]
    grouped = bootstrap_intervals(labels[copies], probs[copies], 0.5, groups=copies, seed=0)["intervals"]["roc_auc"]
    width = lambda i: i["high"] - i["low"]  # noqa: E731
    assert width(naive) < 0.7 * width(honest)
    assert width(grouped) == pytest.approx(width(honest), rel=0.15)


def test_bootstrap_weights_resample_whole_groups():
    """Images of one group are always drawn the same number of times, and each resample draws every group slot once."""
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    weights = bootstrap_weights(6, 500, np.random.default_rng(0), groups)
    assert weights.shape == (500, 6)
    assert np.all(weights[:, 0] == weights[:, 1]) and np.all(weights[:, 3] == weights[:, 5])
    assert np.all(weights[:, [0, 2, 3]].sum(axis=1) == 3)


def test_stratified_resamples_keep_both_classes():
    """Stratified by class, every resample keeps the positive and negative patient counts, so AUC is always defined."""
    labels = np.array([1, 1, 0, 0, 0, 1, 0, 0])
    groups = np.array(["a", "a", "a", "b", "c", "d", "e", "f"])  # patient a has both; b, c, e, f only negatives
    weights = bootstrap_weights(8, 300, np.random.default_rng(0), groups, strata=labels)
    assert np.all(weights[:, [0, 5]].sum(axis=1) == 2)  # two groups with a positive (a, d): two draws
    assert np.all(weights[:, [3, 4, 6, 7]].sum(axis=1) == 4)
    boot = bootstrap_intervals(labels, np.linspace(0.9, 0.1, 8), 0.5, groups=groups, seed=0)
    assert "roc_auc" not in boot["undefined"]


def test_undefined_resamples_are_counted_not_averaged():
    """Unstratified, one positive in ten is often missed; those resamples are counted, not turned into zeros."""
    labels = np.array([1] + [0] * 9)
    probs = np.linspace(0.9, 0.0, 10)
    boot = bootstrap_intervals(labels, probs, 0.5, resamples=1000, seed=0, stratified=False)
    assert boot["undefined"]["roc_auc"] > 200  # (9/10)^10: about 35 % of resamples draw no positive
    assert boot["intervals"]["roc_auc"] == {"low": 1.0, "high": 1.0}


def test_too_few_patients_earn_no_tier():
    """Two patients give a zero-width interval; the tier is insufficient and the reason says why."""
    labels, probs = np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1])
    metrics = evaluate_scores(labels, probs, labels, probs, test_groups=["p", "p", "q", "q"], seed=0)
    assert metrics["roc_auc"] == 1.0 and metrics["intervals"]["roc_auc"] == {"low": 1.0, "high": 1.0}
    assert metrics["quality"]["tier"] == "insufficient"
    assert "only 1 positive and 1 negative test patients" in metrics["quality"]["reason"]


@pytest.mark.parametrize(
    "low, tier",
    [
        (0.95, "excellent"),
        (0.90, "excellent"),
        (0.85, "good"),
        (0.72, "moderate"),
        (0.69, "insufficient"),
        (None, "insufficient"),
    ],
)
def test_quality_tier_uses_the_interval_lower_bound(low, tier):
    """Tiers follow the configured minimums; an undefined AUC is insufficient."""
    assert quality_tier(low, EvaluationSettings().tiers) == tier


def test_tier_is_decided_on_the_lower_bound_not_the_point():
    """A point AUC above 0.9 on a tiny test split does not earn `excellent`."""
    rng = np.random.default_rng(14)
    labels, probs = _scores(rng, 24, separation=3.0)
    metrics = evaluate_scores(labels, probs, labels, probs, seed=0)
    assert metrics["roc_auc"] > 0.9
    assert metrics["quality"]["value"] == metrics["intervals"]["roc_auc"]["low"]
    low = metrics["intervals"]["roc_auc"]["low"]
    assert metrics["quality"]["tier"] == quality_tier(low, EvaluationSettings().tiers)
    assert metrics["quality"]["tier"] != "excellent"
    assert "clinical" in metrics["quality"]["note"]


# --------------------------------------------------------------------------- config


def test_evaluation_section_defaults_and_overrides(tmp_path):
    """The optional `evaluation:` section has safe defaults and takes overrides."""
    base = f"extends: {ROOT / 'conditions.yaml'}\n"
    assert load_config(write_yaml(tmp_path / "a.yaml", base)).evaluation == EvaluationSettings()
    config = load_config(
        write_yaml(
            tmp_path / "b.yaml",
            base + "evaluation: {threshold_rule: sensitivity, "
            "target_sensitivity: 0.95, bootstrap_resamples: 2000, min_per_class: 5, "
            "tiers: {good: 0.85}}\n",
        )
    )
    assert config.evaluation.threshold_rule == "sensitivity" and config.evaluation.target_sensitivity == 0.95
    assert (config.evaluation.bootstrap_resamples, config.evaluation.min_per_class) == (2000, 5)
    assert dict(config.evaluation.tiers) == {"excellent": 0.9, "good": 0.85, "moderate": 0.7}


@pytest.mark.parametrize(
    "section, key",
    [
        ("{threshold_rule: f1}", "evaluation.threshold_rule"),
        ("{bootstrap_resamples: 100}", "evaluation.bootstrap_resamples"),
        ("{confidence: 95}", "evaluation.confidence"),
        ("{tiers: {excellent: 0.75}}", "evaluation.tiers.excellent"),
        ("{tiers: {great: 0.99}}", "evaluation.tiers.great"),
        ("{bootstrap: 1000}", "evaluation.bootstrap"),
    ],
)
def test_evaluation_section_errors_name_file_and_key(tmp_path, section, key):
    """A bad evaluation setting is a ConfigError naming the file and the key."""
    path = write_yaml(tmp_path / "bad.yaml", f"extends: {ROOT / 'conditions.yaml'}\nevaluation: {section}\n")
    with pytest.raises(ConfigError, match=rf"bad\.yaml: {key}"):
        load_config(path)


# --------------------------------------------------------------------------- plots and predict


def test_plots_are_png_images():
    """ROC, PR, calibration and confusion plots render without a display, as PNG bytes."""
    metrics = evaluate_scores(LABELS, PROBS, LABELS, PROBS, seed=0)
    plots = render_plots(LABELS, PROBS, metrics, "t")
    assert set(plots) == set(evaluation.PLOTS)
    assert all(png.startswith(b"\x89PNG") and len(png) > 2000 for png in plots.values())


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny logit model saved as .keras, with three phantom images in a folder."""
    import cv2
    import keras

    from medcore.data.synthetic import phantom

    root = tmp_path_factory.mktemp("predict")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, name="logit")(keras.layers.GlobalAveragePooling2D()(x)))
    (root / "model").mkdir()
    model.save(root / "model" / "model.keras")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # 40 px: predict must resize to the model's 32 px as training does
        cv2.imwrite(str(root / "images" / f"x{i}.png"), phantom(rng, 40, finding=bool(i % 2)))
    return root


def test_predict_scores_a_folder_like_evaluation_does(saved_model, capsys):
    """`medcore predict` writes path, probability, predicted; the threshold comes from model.json."""
    from medcore.cli import main
    from medcore.config import Profile
    from medcore.jsonio import write_json

    model_path = saved_model / "model" / "model.keras"
    write_json(model_path.with_name("model.json"), {"threshold": 0.25, "temperature": 2.0})
    out = saved_model / "preds.csv"
    images = str(saved_model / "images")
    assert main(["predict", "--model", str(model_path), "--images", images, "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "probability", "predicted", "refused"] and len(table) == 3
    assert "threshold 0.2500 from" in capsys.readouterr().err
    assert list(table["predicted"]) == list((table["probability"] >= 0.25).astype(int))
    frame = pd.DataFrame({"path": table["path"], "label": 0})
    expected = evaluation.predict_probabilities(
        evaluation.load_model(model_path), frame, Profile("p", image_size=32, execution="graph"), temperature=2.0
    )
    np.testing.assert_allclose(table["probability"], expected, atol=1e-6)

    listing = saved_model / "list.csv"
    pd.DataFrame({"image": ["images/x0.png", "images/x2.png"]}).to_csv(listing, index=False)
    model_path.with_name("model.json").unlink()
    assert main(["predict", "--model", str(model_path), "--images", str(listing), "--out", str(out)]) == 0
    assert "using threshold 0.5" in capsys.readouterr().err
    assert len(pd.read_csv(out)) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{root}/nope.keras", "--images", "{root}/images"], "no such .keras model file"),
        (["--model", "{root}/model/model.keras", "--images", "{root}/missing"], "no such folder or CSV file"),
        (["--model", "{root}/model/model.keras", "--images", "{root}/bad.csv"], "1 of 1 images not found"),
        (["--model", "{root}/model/model.keras", "--images", "{root}/bad.csv", "--column", "file"], "no column 'file'"),
    ],
)
def test_predict_bad_paths_are_one_line_errors(saved_model, capsys, args, message):
    """A wrong path exits 2 with one `medcore: error:` line naming the problem."""
    from medcore.cli import main

    (saved_model / "bad.csv").write_text("path\nimages/none.png\n")
    argv = ["predict", *[a.format(root=saved_model) for a in args], "--out", str(saved_model / "o.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medcore: error:") and message in err[0], err


# --------------------------------------------------------------------------- calibration


def _overconfident(rng: np.random.Generator, n: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z / temperature) while the model states sigmoid(z): overconfident by `temperature`."""
    z = rng.normal(0.0, 4.0, n)
    labels = (rng.random(n) < evaluation.sigmoid(z, temperature)).astype(int)
    return labels, z


def test_temperature_recovers_how_overconfident_the_logits_are():
    """On val drawn at temperature 3 the fit finds about 3; on fresh test data ECE and Brier fall, AUC stays."""
    rng = np.random.default_rng(5)
    val_labels, val_logits = _overconfident(rng, 4000, 3.0)
    temperature = evaluation.fit_temperature(val_labels, val_logits)
    assert temperature == pytest.approx(3.0, rel=0.15)
    test_labels, test_logits = _overconfident(rng, 2000, 3.0)
    report = evaluation.calibration_report(test_labels, test_logits, temperature, settings=EvaluationSettings(), seed=1)
    before, after = report["before"], report["after"]
    assert after["calibration_error"]["value"] < before["calibration_error"]["value"] / 2
    assert after["brier"]["value"] < before["brier"]["value"]
    # The intervals are paired resamples: the calibrated upper bound sits below the raw lower bound here.
    assert after["calibration_error"]["interval"]["high"] < before["calibration_error"]["interval"]["low"]
    assert roc_auc_score(test_labels, evaluation.sigmoid(test_logits, temperature)) == pytest.approx(
        roc_auc_score(test_labels, test_logits)
    )


def test_well_calibrated_logits_keep_temperature_near_one_and_one_class_keeps_one():
    """Logits that already state the truth are left alone; a val split of one class fits nothing."""
    rng = np.random.default_rng(6)
    labels, z = _overconfident(rng, 4000, 1.0)
    assert evaluation.fit_temperature(labels, z) == pytest.approx(1.0, rel=0.15)
    assert evaluation.fit_temperature(np.ones(20), z[:20]) == 1.0


def test_contract_temperature_is_read_and_checked(tmp_path):
    """predict's temperature comes from model.json; absent means 1, nonsense is a one-line error."""
    from medcore.errors import MedcoreError
    from medcore.jsonio import write_json

    model = tmp_path / "model.keras"
    assert evaluation.contract_temperature(model) == 1.0
    write_json(tmp_path / "model.json", {"temperature": 2.5})
    assert evaluation.contract_temperature(model) == 2.5
    write_json(tmp_path / "model.json", {"temperature": -1})
    with pytest.raises(MedcoreError, match="temperature must be a positive number"):
        evaluation.contract_temperature(model)


# --------------------------------------------------------------------------- studies (MURA)


def test_kappa_matches_sklearn():
    """Cohen's kappa of the decisions at the threshold, as scikit-learn computes it."""
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(3)
    labels, probabilities = _scores(rng, 300)
    point = binary_metrics(labels, probabilities, 0.4)
    assert point["kappa"] == pytest.approx(cohen_kappa_score(labels, (probabilities >= 0.4).astype(int)))


def test_studies_take_the_mean_or_max_of_their_images():
    """A study's probability is the mean (or max) of its images'; label and patient come along."""
    frame = pd.DataFrame(
        {"study": ["a", "a", "b"], "label": [1, 1, 0], "probability": [0.2, 0.6, 0.3], "group": ["p1", "p1", "p2"]}
    )
    mean = evaluation.aggregate_studies(frame)
    assert mean["probability"].tolist() == pytest.approx([0.4, 0.3]) and mean["images"].tolist() == [2, 1]
    assert evaluation.aggregate_studies(frame, "max")["probability"].tolist() == pytest.approx([0.6, 0.3])
    assert mean["group"].tolist() == ["p1", "p2"] and mean["label"].tolist() == [1, 0]


def test_study_level_figures_fit_the_threshold_on_val_studies_and_resample_patients(monkeypatch):
    """Figures per study: threshold from val studies only, n = test studies, bootstrap over patients, kappa."""
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(4)

    def studies(prefix: str, n: int) -> pd.DataFrame:
        rows = []
        for s in range(n):
            label, patient = s % 2, f"{prefix}p{s // 2}"  # two studies per patient
            for _ in range(1 + s % 3):
                rows.append(
                    {
                        "study": f"{prefix}s{s}",
                        "group": patient,
                        "label": label,
                        "probability": float(np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0, 1)),
                    }
                )
        return pd.DataFrame(rows)

    val, test = studies("v", 60), studies("t", 80)
    seen = []
    real = evaluation.choose_threshold
    monkeypatch.setattr(
        evaluation,
        "choose_threshold",
        lambda labels, probs, *a, **k: seen.append(len(labels)) or real(labels, probs, *a, **k),
    )
    image_metrics = evaluate_scores(
        val["label"], val["probability"], test["label"], test["probability"], test["group"].to_numpy()
    )
    metrics = evaluation.study_level(val, test, image_metrics)
    assert seen[-1] == 60  # val studies, not val images, not test
    assert metrics["unit"] == "study" and metrics["n"] == 80 and metrics["image_level"]["n"] == len(test)
    assert metrics["bootstrap"]["unit"] == "patient" and metrics["bootstrap"]["groups"] == 40
    per_study = evaluation.aggregate_studies(test)
    decided = (per_study["probability"] >= metrics["threshold"]).astype(int)
    assert metrics["kappa"] == pytest.approx(cohen_kappa_score(per_study["label"], decided))
    assert metrics["intervals"]["kappa"]["low"] <= metrics["kappa"] <= metrics["intervals"]["kappa"]["high"]
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(per_study["label"], per_study["probability"]))
    # The gates and the choice among profiles read val figures in the same unit (the cold night of 2026-11-30
    # found limb with none, so it failed every gate and never became a champion).
    val_studies = evaluation.aggregate_studies(val)
    assert metrics["selection"]["n"] == 60 and metrics["selection"]["split"] == "val"
    assert metrics["selection"]["roc_auc"] == pytest.approx(
        roc_auc_score(val_studies["label"], val_studies["probability"])
    )
    assert metrics["selection"]["intervals"]["roc_auc"]["low"] <= metrics["selection"]["roc_auc"]


def test_paired_auc_difference_cancels_what_both_models_share():
    """Two models on the same images: the paired interval of the difference is narrower than either AUC's own,
    brackets the point difference, and a model compared with itself differs by exactly zero."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 300)
    hardness = rng.normal(0, 1.0, 300)  # what both models get wrong alike
    old = 1 / (1 + np.exp(-(labels * 1.2 + hardness)))
    new = 1 / (1 + np.exp(-(labels * 1.4 + hardness + rng.normal(0, 0.2, 300))))
    groups = np.repeat(np.arange(150), 2)
    paired = evaluation.paired_auc_difference(labels, new, old, groups, resamples=1000, seed=1)
    assert paired["unit"] == "patient" and paired["units"] == 150 and paired["n"] == 300
    assert paired["delta"] == pytest.approx(paired["challenger_auc"] - paired["champion_auc"])
    assert paired["low"] <= paired["delta"] <= paired["high"]
    own = paired["challenger_interval"][1] - paired["challenger_interval"][0]
    assert paired["high"] - paired["low"] < own / 2, "pairing removes the shared variance"
    same = evaluation.paired_auc_difference(labels, old, old, groups, seed=1)
    assert same["delta"] == same["low"] == same["high"] == 0.0
    with pytest.raises(MedcoreError, match="both classes"):
        evaluation.paired_auc_difference(np.ones(4), new[:4], old[:4])


def test_predict_refuses_files_keras_cannot_build_in_one_line(saved_model, capsys):
    """An empty zip, a zip naming an unknown class, and a contract of another model: exit 2, one line, no traceback."""
    import json
    import zipfile

    from medcore.cli import main
    from medcore.jsonio import write_json

    bad = saved_model / "bad"
    bad.mkdir(exist_ok=True)
    with zipfile.ZipFile(bad / "empty.keras", "w"):
        pass
    with zipfile.ZipFile(bad / "unknown.keras", "w") as archive:
        archive.writestr(
            "config.json", json.dumps({"module": "evil", "class_name": "Nope", "config": {}, "registered_name": "Nope"})
        )
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
    other = bad / "other" / "model.keras"
    other.parent.mkdir(exist_ok=True)
    other.write_bytes((saved_model / "model" / "model.keras").read_bytes())
    write_json(other.with_name("model.json"), {"threshold": 0.3, "model_sha256": "0" * 64})
    for model, words in (
        (bad / "empty.keras", "not a loadable .keras model"),
        (bad / "unknown.keras", "not a loadable .keras model"),
        (other, "describes another model"),
    ):
        argv = ["predict", "--model", str(model), "--images", str(saved_model / "images"), "--out", str(bad / "o.csv")]
        assert main(argv) == 2, model
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("medcore: error:") and words in err[0], err
    assert not (bad / "o.csv").exists()


def _predict_argv(saved_model, out) -> list[str]:
    model = saved_model / "model" / "model.keras"
    return ["predict", "--model", str(model), "--images", str(saved_model / "images"), "--out", str(out)]


def _one_error_line(capsys, words: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medcore: error:") and words in err[0], err


def test_predict_out_never_replaces_what_is_not_its_own(saved_model, tmp_path, capsys):
    """--out refuses a symlink, a FIFO, a folder, a file it did not write and a path among the images;
    each target is left exactly as it was. Its own earlier CSV is replaced (issue 39)."""
    from medcore.cli import main

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    link = tmp_path / "link.csv"
    link.symlink_to(victim)
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    (tmp_path / "folder.csv").mkdir()
    inside = saved_model / "images" / "scores.csv"
    for out, words in (
        (link, "is a symlink"),
        (fifo, "is a FIFO"),
        (tmp_path / "folder.csv", "folder"),
        (other, "not written by this command"),
        (inside, "inside the input folder"),
        (tmp_path / "missing" / "o.csv", "does not exist"),
    ):
        assert main(_predict_argv(saved_model, out)) == 2, out
        _one_error_line(capsys, words)
    assert link.is_symlink() and victim.read_text() == "keep me\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and other.read_text() == "a,b\n1,2\n"
    assert not inside.exists()
    mine = tmp_path / "mine.csv"
    assert main(_predict_argv(saved_model, mine)) == 0
    assert main(_predict_argv(saved_model, mine)) == 0, "its own earlier output may be replaced"
    assert len(pd.read_csv(mine)) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_predict_out_refuses_a_device(saved_model, tmp_path, capsys):
    """As root, --out naming a character device (like /dev/full) leaves the device in place."""
    from medcore.cli import main

    device = tmp_path / "full"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # /dev/full's numbers, made in a scratch folder
    assert main(_predict_argv(saved_model, device)) == 2
    _one_error_line(capsys, "is a device")
    assert stat.S_ISCHR(os.lstat(device).st_mode)


@pytest.mark.parametrize("value", ["0", "1000000000", "-5"])
def test_predict_batch_size_is_bounded_in_one_line(saved_model, tmp_path, capsys, value):
    """--batch-size outside 1..4096 (a profile's range) is one line naming the flag, not a pydantic traceback."""
    from medcore.cli import main

    assert main([*_predict_argv(saved_model, tmp_path / "o.csv"), "--batch-size", value]) == 2
    _one_error_line(capsys, "--batch-size must be between 1 and 4096")
    assert not (tmp_path / "o.csv").exists()


def _png_header_only(width: int, height: int, depth: int = 16, colour: int = 6) -> bytes:
    """A PNG whose IHDR declares width x height and whose image data is a few zero rows: decodes to GBs if tried."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + width * 8) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _rle_dicom_declaring(side: int) -> bytes:
    """An RLE Lossless DICOM of 32 px whose header is then made to declare side x side."""
    import io

    import pydicom
    from pydicom.uid import RLELossless

    from medcore.data.synthetic import dicom_bytes

    ramp = np.tile(np.arange(32, dtype=np.uint16) * 100, (32, 1))
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(ramp, patient_id="p", study_uid="1.2.3")))
    ds.compress(RLELossless)
    ds.Rows = ds.Columns = side
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def test_predict_refuses_what_validate_refuses_and_scores_the_rest(saved_model, tmp_path, capsys):
    """A JPEG cut in half with an EOI appended, a PNG declaring 12000^2 RGBA16 and an RLE DICOM declaring 12000^2
    are rows with a reason, from their headers and a strict decode; the good images are still scored (issue 39)."""
    import shutil

    import cv2

    from medcore.cli import main
    from medcore.data.synthetic import phantom

    images = tmp_path / "images"
    shutil.copytree(saved_model / "images", images)
    whole = cv2.imencode(".jpg", phantom(np.random.default_rng(1), 64))[1].tobytes()
    (images / "half.jpg").write_bytes(whole[: len(whole) // 2] + b"\xff\xd9")
    (images / "huge.png").write_bytes(_png_header_only(12000, 12000))
    (images / "huge.dcm").write_bytes(_rle_dicom_declaring(12000))
    out = tmp_path / "scores.csv"
    model = str(saved_model / "model" / "model.keras")
    argv = ["predict", "--model", model, "--images", str(images), "--out", str(out)]
    assert main(argv) == 0
    table = pd.read_csv(out, keep_default_na=False).set_index(pd.read_csv(out)["path"].map(lambda p: Path(p).name))
    assert list(table.columns) == ["path", "probability", "predicted", "refused"]
    assert table.loc["half.jpg", "refused"].startswith("image_truncated")
    assert table.loc["huge.png", "refused"].startswith("image_too_large")
    assert table.loc["huge.dcm", "refused"].startswith("image_too_large")
    for name in ("half.jpg", "huge.png", "huge.dcm"):
        assert table.loc[name, "probability"] == "" and table.loc[name, "predicted"] == ""
    scored = table.loc[[f"x{i}.png" for i in range(3)]]
    assert (scored["refused"] == "").all() and scored["probability"].astype(float).between(0, 1).all()
    assert "3 images scored" in capsys.readouterr().out


def test_predict_with_every_image_refused_writes_the_reasons_and_exits_1(saved_model, tmp_path, capsys):
    """Nothing scorable: the CSV still says why for each image, and the exit status says nothing was scored."""
    from medcore.cli import main

    images = tmp_path / "images"
    images.mkdir()
    (images / "huge.png").write_bytes(_png_header_only(12000, 12000))
    out = tmp_path / "scores.csv"
    model = str(saved_model / "model" / "model.keras")
    argv = ["predict", "--model", model, "--images", str(images), "--out", str(out)]
    assert main(argv) == 1
    assert pd.read_csv(out)["refused"].str.startswith("image_too_large").all()


def test_a_keras_archive_that_inflates_too_far_is_refused_before_keras_opens_it(saved_model, tmp_path, monkeypatch):
    """A .keras whose weights member inflates 1000:1, or whose members sum past the limit, is one MedcoreError
    from the zip directory alone (a 14 MB file inflating to 3 GiB peaked at 7.1 GB, issue 39)."""
    import zipfile

    real = saved_model / "model" / "model.keras"
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(real) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in source.infolist():
            if not item.filename.endswith(".h5"):
                archive.writestr(item.filename, source.read(item))
        archive.writestr("model.weights.h5", bytes(64 * 2**20))
    with pytest.raises(MedcoreError, match="inflates") as refused:
        evaluation.load_model(bomb)
    assert str(bomb) in str(refused.value) and "\n" not in str(refused.value)
    assert evaluation.load_model(real) is not None  # a real model passes the same check
    monkeypatch.setattr(predict, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(MedcoreError, match="uncompressed"):
        evaluation.load_model(real)


def test_a_model_file_loaded_again_unchanged_is_the_same_model_and_a_rewritten_one_is_read_afresh(saved_model):
    """evaluate and gradcam in one `medcore run` process share one load; a file saved again is a new model."""
    import shutil

    from medcore.assess.predict import load_model

    path = saved_model / "reload" / "model.keras"
    path.parent.mkdir(exist_ok=True)
    shutil.copy(saved_model / "model" / "model.keras", path)
    first = load_model(path)
    assert load_model(path, eager=True) is first and first.run_eagerly
    other = load_model(saved_model / "model" / "model.keras")
    assert other is not first and load_model(path) is first  # two entries: a candidate and its champion
    first.save(path)  # rewritten (a retried train stage): same path, new file
    again = load_model(path)
    assert again is not first and not again.run_eagerly
    np.testing.assert_array_equal(again.get_layer("logit").get_weights()[0], first.get_layer("logit").get_weights()[0])
