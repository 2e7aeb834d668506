"""model_card.md: every figure from the run's own files, caveats from config and from the data, copied on promotion."""

from __future__ import annotations

from medcore.assess.model_card import render_model_card, write_model_card
from medcore.config import load_config
from medcore.jsonio import read_json, write_json
from tests.fakes import write_config, write_run


def _card(tmp_path, outcome="ok", validation_update=None):
    config_path = write_config(tmp_path)
    text = config_path.read_text().replace(
        "pneumonia: {dataset: pneumonia, layout: folders, positive: [PNEUMONIA], negative: [NORMAL]}",
        "pneumonia: {dataset: pneumonia, layout: folders, positive: [PNEUMONIA], negative: [NORMAL], "
        "caveats: ['Children only; every film squashed to 224x224.']}",
    )
    config_path.write_text(text)
    config = load_config(config_path)
    run = write_run(config.runs_root, "night", {("pneumonia", "standard"): outcome}, config=config_path)
    paths = run.model("pneumonia", "standard")
    if validation_update:
        write_json(paths.validation_json, {**read_json(paths.validation_json), **validation_update})
    return config, paths, render_model_card(config, config.conditions["pneumonia"], config.profiles["standard"], paths)


def test_the_card_holds_the_runs_own_figures_and_the_configured_caveats(tmp_path):
    _, _, card = _card(tmp_path)
    for section in (
        "## Model details",
        "## Intended use",
        "## Labels and factors",
        "## Training and evaluation data",
        "## Preprocessing",
        "## Metrics on the test split",
        "## Calibration",
        "## Grad-CAM faithfulness",
        "## Ethical considerations",
        "## Caveats and recommendations",
    ):
        assert section in card
    assert "| ROC AUC | 0.812 (0.620–0.960) |" in card  # fakes.BASE_METRICS, interval included
    assert "Positive: PNEUMONIA; negative: NORMAL" in card and "Research use only" in card
    assert "Dataset fingerprint `data0000`" in card and "| test | 5 | 5 |" in card
    assert "- Children only; every film squashed to 224x224." in card
    assert "Train/test shift" not in card  # 48 % vs 50 % positives is no shift


def test_a_prevalence_shift_and_dropped_images_become_caveats(tmp_path):
    _, _, card = _card(
        tmp_path,
        validation_update={
            "counts": {"train": {"positive": 74, "negative": 26}, "test": {"positive": 63, "negative": 37}},
            "findings": [
                {
                    "code": "group_leakage",
                    "severity": "warning",
                    "count": 9,
                    "dropped": 9,
                    "policy": "drop",
                    "message": "9 groups",
                }
            ],
        },
    )
    assert "Train/test shift: positives are 74% of train but 63% of test" in card
    assert "Validation dropped 9 images (group_leakage 9)" in card


def test_a_card_written_before_gradcam_says_so_and_is_replaced_after(tmp_path):
    config, paths, card = _card(tmp_path, outcome="gradcam")
    assert "Not measured yet (no gradcam.json)." in card
    written = write_model_card(config, config.conditions["pneumonia"], config.profiles["standard"], paths)
    assert written == paths.model_card and paths.model_card.read_text() == card


def test_promotion_copies_the_card_with_the_model(tmp_path):
    from medcore import pipeline

    config, paths, card = _card(tmp_path)
    paths.model_card.write_text(card)
    pipeline.promote("night", config.runs_root)
    champion = read_json(config.registry.root / "pneumonia.json")["champion"]
    assert champion["card_path"].endswith("night__standard.md")
    assert (config.registry.root / "pneumonia" / "night__standard.md").read_text() == card


def _study_frame(studies: int, seed: int):
    """Two images per study, one patient per study; positives score higher on average."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(studies):
        label = s % 2
        for image in range(2):
            rows.append(
                {
                    "relpath": f"s{s}/i{image}.png",
                    "label": label,
                    "study": f"p{s}/study1",
                    "group": f"p{s}",
                    "probability": float(np.clip(0.35 + 0.3 * label + rng.normal(0, 0.2), 0.01, 0.99)),
                }
            )
    return pd.DataFrame(rows)


def test_study_level_figures_are_called_studies_and_the_image_ones_stay_beside_them(tmp_path):
    """MURA-style metrics (as evaluation.study_level writes them) count studies, not images; pad is named."""
    from medcore.assess.evaluation import evaluate_scores, study_level

    config, paths, _ = _card(tmp_path)
    val, test = _study_frame(8, 1), _study_frame(6, 2)
    groups = test["group"].to_numpy()
    images = evaluate_scores(
        val["label"].to_numpy(),
        val["probability"].to_numpy(),
        test["label"].to_numpy(),
        test["probability"].to_numpy(),
        groups,
    )
    write_json(paths.metrics_json, study_level(val, test, images))
    write_json(paths.training_json, {**read_json(paths.training_json), "resize": "pad"})

    card = render_model_card(config, config.conditions["pneumonia"], config.profiles["standard"], paths)

    assert "6 test studies (3 positive, 12 images); a study's probability is the mean of its images'" in card
    assert "test images" not in card
    assert "threshold fixed on val (studies)" in card and "resamples of patients" in card
    assert f"| ROC AUC per image (12 images) | {images['roc_auc']:.3f} (" in card
    assert "the aspect ratio is kept and the rest of the square padded with black" in card


def test_cross_validated_figures_are_called_out_of_fold_images(tmp_path):
    """A small set's pooled out-of-fold figures (medcore.assess.crossval) are not called a test split's images."""
    import pandas as pd

    from medcore.assess.crossval import crossval_metrics

    config, paths, card = _card(tmp_path)
    assert "10 test images (5 positive)" in card and "the aspect ratio is not kept" in card
    rows = [
        {
            "role": role,
            "relpath": f"{role}{i}.png",
            "path": f"/d/{role}{i}.png",
            "label": i % 2,
            "group": f"g{i}",
            "logit": (i % 2) * 1.5 + 0.1 * i - 0.5,
            "repeat": 0,
            "fold": i % 3,
        }
        for role in ("inner_val", "held_out")
        for i in range(12)
    ]
    metrics, _ = crossval_metrics(pd.DataFrame(rows))
    write_json(paths.metrics_json, metrics)
    card = render_model_card(config, config.conditions["pneumonia"], config.profiles["standard"], paths)
    assert "12 images scored out of fold by cross-validation (6 positive)" in card and "test images" not in card


def test_a_model_worse_than_chance_is_called_so_and_its_maps_no_evidence(tmp_path):
    """Test AUC interval below 0.5: the card says worse than chance (metrics and caveats), and a deletion test that
    favours its Grad-CAM is not read as evidence."""
    from tests.fakes import metrics_with

    config, paths, _ = _card(tmp_path)
    write_json(paths.metrics_json, metrics_with(0.30))
    gradcam = read_json(paths.gradcam_json)
    gradcam["faithfulness"] = {"better_than_random": True, "gradcam_deletion_auc": 0.2, "random_deletion_auc": 0.4}
    write_json(paths.gradcam_json, gradcam)
    card = render_model_card(config, config.conditions["pneumonia"], config.profiles["standard"], paths)
    assert "**Worse than chance**: the whole ROC AUC interval lies below 0.5." in card
    caveats = card.split("## Caveats and recommendations", 1)[1]
    assert caveats.lstrip().startswith("- Worse than chance: test ROC AUC 0.300 (0.108–0.448)")
    assert "the model is worse than chance, so its heatmaps are not evidence" in card
    assert ": better than random." not in card
