"""model_card.md: every figure from the run's own files, caveats from config and from the data, copied on promotion."""

from __future__ import annotations

from medcore.config import load_config
from medcore.jsonio import read_json, write_json
from medcore.model_card import render_model_card, write_model_card
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
