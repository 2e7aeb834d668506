"""The report is computed from the run's files, whatever state the chains ended in."""

from __future__ import annotations

import re

import pytest

from medcore import pipeline
from medcore.jsonio import read_json, write_json
from medcore.layout import RunLayout
from medcore.nights.registry import test_split_fingerprint as fingerprint  # an alias pytest does not collect
from medcore.report.render import render_html, write_report
from tests.fakes import BASE_METRICS, metrics_with, paired, write_config, write_run
from tests.fakes import TRAINING as FAKE_TRAINING

# The same figures the fake run folders carry, so a row asserted below traces to one place.
METRICS, TRAINING = BASE_METRICS, FAKE_TRAINING


def _run(tmp_path, outcomes: dict[str, str]) -> RunLayout:
    run = RunLayout(tmp_path, "manual__2026-11-27T01:00:00+00:00")
    jobs = [{"condition": c, "profile": "standard"} for c in outcomes]
    write_json(
        run.run_json,
        {
            "run_id": run.run_id,
            "started": "2026-11-27T01:00:00+00:00",
            "config": "c.yaml",
            "data_root": "/data",
            "params": {},
            "jobs": jobs,
        },
    )
    for condition, outcome in outcomes.items():
        paths = run.model(condition, "standard")
        write_json(
            paths.validation_json,
            {
                "ok": outcome != "validate",
                "findings": [
                    {
                        "code": "class_too_small",
                        "severity": "error" if outcome == "validate" else "warning",
                        "count": 1,
                        "message": "test split has 0 positive images",
                        "examples": [],
                    }
                ],
            },
        )
        if outcome == "ok":
            write_json(paths.training_json, TRAINING)
            write_json(paths.metrics_json, METRICS)
            write_json(
                paths.gradcam_json,
                {
                    "layer": "relu",
                    "overlays": [
                        {"file": paths.gradcam_overlay("tp", 1), "kind": "tp", "probability": 0.9, "label": 1}
                    ],
                },
            )
        elif outcome != "killed":
            write_json(paths.failure_json, {"stage": outcome, "error": f"boom in {outcome}"})
    return run


def test_mixed_outcomes(tmp_path):
    """Successes show metrics and overlays; failures show stage and error; a killed chain is named too."""
    run = _run(tmp_path, {"pneumonia": "ok", "cardiomegaly": "validate", "limb": "train", "knee": "killed"})
    summary = write_report(run)
    report = run.report_md.read_text()
    assert (summary["planned"], summary["succeeded"], summary["failed"]) == (4, 1, 3)
    # Each figure carries its interval; the tier follows the AUC interval's lower bound (0.62 < 0.70).
    assert (
        "| pneumonia | standard | ✅ succeeded | 0.80 (0.55–0.95) | 0.75 (0.33–1.00) | 0.60 (0.20–1.00) "
        "| 0.90 (0.67–1.00) | 0.81 (0.62–0.96) | insufficient | 0.420 | 3/5 (early stop) | 2.0 |"
    ) in report
    assert "| F1 | 0.667 |" in report, "a figure without an interval is shown as it is, not dropped"
    assert "❌ failed at validate" in report and "`boom in validate`" in report
    assert "❌ failed at train" in report and "`boom in train`" in report
    assert "❌ incomplete at validate" in report and "recorded no error" in report
    assert "![tp p=0.90](pneumonia/standard/gradcam/tp_01.png)" in report
    assert "4 models planned, 1 succeeded, 3 failed (25.0 %)" in report
    assert "Research use only" in report


def test_all_failed(tmp_path):
    """With no success the report still renders, says so, and shows no best model."""
    run = _run(tmp_path, {"pneumonia": "evaluate", "cardiomegaly": "gradcam"})
    write_report(run)
    report = run.report_md.read_text()
    assert "**no model succeeded**" in report
    assert "best model" not in report


# --------------------------------------------------------------------------- the full report, beyond the seed


def _section(report: str, heading: str) -> str:
    """The text under `## heading`, up to the next second-level heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", report, flags=re.S | re.M)
    assert match, f"no section {heading!r}"
    return match.group(1)


def _row(section: str, *first: str) -> list[str]:
    """The cells of the table row whose first cells are `first`."""
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[: len(first)] == list(first):
            return cells
    raise AssertionError(f"no row {first} in:\n{section}")


def _report(tmp_path, outcomes, run_id="run1", started="2026-11-27T01:00:00+00:00", promote=True, **config):
    config_path = write_config(tmp_path, **config)
    run = write_run(tmp_path / "runs", run_id, outcomes, config_path, started=started)
    if promote:
        pipeline.promote(run.run_id, run.runs_root)
    summary = write_report(run)
    return run, summary, run.report_md.read_text()


@pytest.fixture(autouse=True)
def _private_registry(monkeypatch):
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)  # each test's registry sits beside its config


def test_all_succeeded(tmp_path):
    """Every model succeeded: no failure section, key figures from the metrics files, a first champion each."""
    aucs = {
        ("pneumonia", "standard"): 0.81,
        ("pneumonia", "intensive"): 0.93,
        ("limb", "standard"): 0.74,
        ("limb", "intensive"): 0.77,
    }
    tiers = {0.81: "moderate", 0.93: "excellent", 0.74: "insufficient", 0.77: "insufficient"}
    outcomes = {
        key: {"metrics": metrics_with(auc, quality={**metrics_with(auc)["quality"], "tier": tiers[auc]}), "seed": i}
        for i, (key, auc) in enumerate(aucs.items())
    }
    _layout, summary, report = _report(tmp_path, outcomes)
    assert (summary["planned"], summary["succeeded"], summary["failed"]) == (4, 4, 0)
    assert "**all models succeeded**" in report and "## Failed models" not in report
    assert "4 models planned, 4 succeeded, 0 failed (100.0 %)" in report
    # per-model sections come grouped by tier, best tier first, each model under its own tier
    headings = re.findall(r"^## Test tier: (\w+) \((\d+) models?\)", report, flags=re.M)
    assert headings == [("excellent", "1"), ("moderate", "1"), ("insufficient", "2")]
    insufficient = _section(report, "Test tier: insufficient (2 models)")
    assert "### limb / standard" in insufficient and "### limb / intensive" in insufficient
    assert "### pneumonia" not in insufficient
    key = _section(report, "Key figures")
    assert "Best model: **pneumonia/intensive**, test ROC AUC 0.930; weakest: limb/standard, 0.740" in key
    assert f"ROC AUC {sum(aucs.values()) / 4:.3f}" in key
    assert "Models per test tier: excellent 1, moderate 1, insufficient 2" in key
    # where each model's weights started, ending its own line (not run into the next bullet)
    assert (
        len(
            re.findall(
                r"^- Trained 3 of 5 epochs at 32 px on 50 images \(1\.2 images/s\), starting from none "
                r"\(no shared backbone yet; run `medcore pretrain`\)$",
                report,
                flags=re.M,
            )
        )
        == 4
    )
    champions = _section(report, "Champion per condition")
    assert _row(champions, "pneumonia")[1] == "**promoted**" and "first champion" in _row(champions, "pneumonia")[4]
    assert _row(champions, "pneumonia")[2].startswith("intensive, ROC AUC 0.930")
    assert _row(champions, "limb")[1] == "**promoted**"
    usage = _section(report, "Grad-CAM on a new image")
    champion_copy = read_json(tmp_path / "registry" / "pneumonia.json")["champion"]["model_path"]
    assert f'load_model("{champion_copy}")' in usage and 'layer="relu"' in usage and "size=32" in usage
    tree = _section(report, "Artifacts of this run")
    assert "promotion.json" in tree and "report.md (this report)" in tree and "gradcam/ (3 files" in tree
    assert report.startswith("# medcore training status report") and report.rstrip().endswith("clinical decision.")


@pytest.mark.parametrize(
    ("outcome", "stage", "cause", "fix"),
    [
        (
            "validate",
            "validate",
            "`class_too_small`: test split has 0 positive images",
            "add images of the short class",
        ),
        ("train", "train", "the train stage raised an error", "resumes from the last saved epoch"),
        ("evaluate", "evaluate", "the evaluate stage raised an error", "split.csv has val and test images"),
        ("gradcam", "gradcam", "the Grad-CAM target layer is not in the model", "set `gradcam.layer`"),
        ("killed", "train", "the train stage never finished and recorded no error", "clear the task to retry"),
    ],
)
def test_failure_at_each_stage(tmp_path, outcome, stage, cause, fix):
    """A model failing at any stage is named with stage, error, root cause and fix, and never becomes champion."""
    outcomes = {("pneumonia", "standard"): "ok", ("cardiomegaly", "standard"): outcome}
    _layout, summary, report = _report(tmp_path, outcomes)
    [failure] = summary["failures"]
    assert (failure["condition"], failure["stage"]) == ("cardiomegaly", stage)
    failed = _section(report, "Failed models")
    assert f"### cardiomegaly / standard: failed at `{stage}`" in failed
    assert f"- Root cause: {cause}" in failed and fix in failed
    assert "**some models failed**" in report
    row = _row(_section(report, "Champion per condition"), "cardiomegaly")
    assert row[1] == "no champion" and row[2] == "none" and "no model of this run succeeded (standard failed)" in row[4]
    assert not (tmp_path / "registry" / "cardiomegaly").exists()
    assert any(line.startswith("1. Fix cardiomegaly/standard") for line in _section(report, "Next steps").splitlines())


def test_all_failed_keeps_the_champion(tmp_path):
    """A run where everything failed renders, names no best model, and leaves the champion in place."""
    config = write_config(tmp_path)
    first = write_run(tmp_path / "runs", "good", {("pneumonia", "standard"): {"metrics": metrics_with(0.9)}}, config)
    pipeline.promote(first.run_id, first.runs_root)
    _layout, summary, report = _report(
        tmp_path,
        {("pneumonia", "standard"): "train", ("pneumonia", "intensive"): "validate"},
        run_id="bad",
        started="2026-11-28T01:00:00+00:00",
    )
    assert summary["succeeded"] == 0 and "**no model succeeded**" in report and "best model" not in report
    row = _row(_section(report, "Champion per condition"), "pneumonia")
    assert row[1] == "kept champion" and row[3].startswith("`good` standard, ROC AUC 0.900")
    assert "no model of this run succeeded (standard, intensive failed); the champion stays" in row[4]
    assert "No model succeeded: no champion changed" in _section(report, "Next steps")
    assert "the pneumonia champion (good/standard)" in _section(report, "Grad-CAM on a new image")


def test_first_run_has_no_previous_run_or_champion(tmp_path):
    """The very first run says so instead of inventing a comparison."""
    _layout, _, report = _report(tmp_path, {("knee", "standard"): "ok", ("knee", "intensive"): "evaluate"})
    change = _section(report, "Change against the previous run and the champion")
    assert _row(change, "knee", "standard")[3:] == ["first run", "—", "no champion", "—"]
    assert _row(change, "knee", "intensive")[2] == "❌ failed"
    assert "first champion" in _row(_section(report, "Champion per condition"), "knee")[4]


def test_model_card_and_plots_are_lines_of_their_own(tmp_path):
    """The template's trim_blocks eats the newline after a closing tag: the card link once ran into "- Plots:"."""
    run = _run(tmp_path, {"pneumonia": "ok"})
    paths = run.model("pneumonia", "standard")
    paths.model_card.write_text("# card\n")
    write_json(paths.metrics_json, {**METRICS, "plots": {"roc": str(paths.plot("roc"))}})
    write_report(run)
    lines = run.report_md.read_text().splitlines()
    card = next(line for line in lines if "[model card](" in line)
    assert card.endswith("[model card](pneumonia/standard/model_card.md)"), card
    assert any(line.startswith("- Plots: [roc](") for line in lines)


def test_report_without_promotion_still_renders(tmp_path):
    """If promote never ran, the report says no decision was recorded and reads champions from the registry."""
    _layout, _, report = _report(tmp_path, {("limb", "standard"): "ok"}, promote=False)
    assert "did not record a decision for this run" in report
    assert _row(_section(report, "Champion per condition"), "limb")[1] == "not decided"
    assert "No champion decision was recorded for limb" in _section(report, "Next steps")


def test_values_equal_the_metrics_files(tmp_path):
    """Every figure in the comparison, data and model tables is the one in the run's files."""
    config = write_config(tmp_path)
    before = write_run(
        tmp_path / "runs", "monday", {("pneumonia", "standard"): {"metrics": metrics_with(0.83)}}, config
    )
    pipeline.promote(before.run_id, before.runs_root)
    versus = paired("monday/standard", 0.8567, 0.83)  # the champion re-scored on tuesday's images
    run, _, report = _report(
        tmp_path,
        {("pneumonia", "standard"): {"metrics": metrics_with(0.8567, accuracy=0.7321, versus=versus), "seed": 7}},
        run_id="tuesday",
        started="2026-11-28T01:00:00+00:00",
    )
    now = read_json(run.model("pneumonia", "standard").metrics_json)
    then = read_json(before.model("pneumonia", "standard").metrics_json)
    champion = read_json(tmp_path / "registry" / "pneumonia.json")["history"][-1]["decision_record"]["champion"]
    change = _row(_section(report, "Change against the previous run and the champion"), "pneumonia", "standard")
    assert change[2] == f"{now['roc_auc']:.3f}"
    assert change[3] == f"{then['roc_auc']:.3f} (`monday`)" and change[4] == f"{now['roc_auc'] - then['roc_auc']:+.3f}"
    assert change[5] == f"{champion['roc_auc']:.3f} (`monday` standard)"
    assert change[6] == f"{now['roc_auc'] - champion['roc_auc']:+.3f}"
    model = _row(_section(report, "Models"), "pneumonia", "standard")
    low, high = now["intervals"]["roc_auc"]["low"], now["intervals"]["roc_auc"]["high"]
    assert (
        model[3] == f"{now['accuracy']:.2f} (0.55–0.95)" and model[7] == f"{now['roc_auc']:.2f} ({low:.2f}–{high:.2f})"
    )
    data = _row(_section(report, "Data"), "pneumonia", "standard")
    paths = run.model("pneumonia", "standard")
    assert data[2] == f"`{read_json(paths.validation_json)['fingerprint']}`"
    assert data[3] == f"`{fingerprint(paths.split_csv)}`"
    assert data[4:] == ["42 (20 pos)", "8 (4 pos)", "10 (5 pos)"]
    decision = _row(_section(report, "Champion per condition"), "pneumonia")
    assert decision[1] == "**promoted**" and f"({now['roc_auc'] - then['roc_auc']:+.3f}, 95% paired" in decision[4]


def test_html_rendering_is_the_markdown_escaped(tmp_path):
    """The HTML version has real tables, rewritten image links, and escapes any HTML in error text."""
    config = write_config(tmp_path)
    run = write_run(tmp_path / "runs", "r", {("pneumonia", "standard"): "ok", ("limb", "standard"): "train"}, config)
    write_json(run.model("limb", "standard").failure_json, {"stage": "train", "error": "<script>alert(1)</script>"})
    write_report(run)
    page = render_html(
        run.report_md.read_text(),
        title="t <b>",
        link=lambda url: f"files/{url}",
        banners=["mail <failed>"],
        script=False,
    )
    assert "<table>" in page and '<img src="files/pneumonia/standard/gradcam/tp_01.png"' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<title>t &lt;b&gt;</title>" in page and "mail &lt;failed&gt;" in page
    dropped = render_html(
        "![x](a.png) and [a link](b.txt) and [web](https://example.org)", title="t", link=lambda url: None
    )
    assert "<img" not in dropped and "[x]" in dropped and "a link" in dropped and 'href="b.txt"' not in dropped
    assert 'href="https://example.org"' in dropped


def test_view_is_computed_once_in_python(tmp_path):
    """The summary's best model and mean AUC are the key figures' own, and each model hands the template its values."""
    from medcore.report.render import gather_run

    aucs = {("pneumonia", "standard"): 0.81, ("limb", "standard"): 0.93, ("knee", "standard"): "train"}
    outcomes = {
        key: ({"metrics": metrics_with(auc), "seed": i} if isinstance(auc, float) else auc)
        for i, (key, auc) in enumerate(aucs.items())
    }
    config = write_config(tmp_path)
    view = gather_run(write_run(tmp_path / "runs", "r", outcomes, config))
    assert view["best"] is view["key_figures"]["best"] and view["best"]["label"] == "limb/standard"
    assert view["mean_auc"] == view["key_figures"]["means"]["roc_auc"] == pytest.approx((0.81 + 0.93) / 2)
    assert [m["label"] for m in view["failures"]] == ["knee/standard"]
    pneumonia = view["models"][0]
    assert pneumonia["roc_auc"] == 0.81 and pneumonia["tier"] == "insufficient"
    assert pneumonia["figures"]["accuracy"] == {"value": 0.8, "low": 0.55, "high": 0.95}
    assert pneumonia["split_counts"]["train"] == {"total": 42, "positive": 20}
    assert view["models"][2]["roc_auc"] is None and view["models"][2]["diagnosis"]["root_cause"]


@pytest.mark.parametrize("code", ["group_leakage", "class_too_small", "dataset_unreadable", "label_unknown"])
def test_a_findings_fix_comes_from_its_rule(code):
    """The fix the report suggests for a finding that stopped a model is the one written beside its rule in CHECKS."""
    from medcore.config import CHECKS
    from medcore.report.render import diagnose

    model = {
        "status": "failed",
        "failure": {"stage": "validate", "error": "x"},
        "validation": {"findings": [{"code": code, "severity": "error", "message": "m"}]},
    }
    assert diagnose(model)["fix"] == CHECKS[code].fix


# --------------------------------------------------------------------------- the first screen


def _three_nights(tmp_path):
    """Three nights: pneumonia rising and promoted, limb falling (champion kept), cardiomegaly failing tonight."""
    config = write_config(tmp_path)

    def scored(condition: str, auc: float) -> dict:
        """Figures as evaluate writes them, with the champion of the night re-scored on the same images."""
        path = tmp_path / "registry" / f"{condition}.json"
        champion = read_json(path)["champion"] if path.exists() else None
        versus = (
            paired(f"{champion['run_id']}/{champion['profile']}", auc, champion["metrics"]["roc_auc"])
            if champion
            else None
        )
        return metrics_with(auc, versus=versus)

    for day, (pneumonia, limb) in (("26", (0.80, 0.74)), ("27", (0.82, 0.73)), ("28", (0.85, 0.69))):
        cardiomegaly = "validate" if day == "28" else {"metrics": scored("cardiomegaly", 0.9), "seed": 5}
        outcomes = {
            ("pneumonia", "standard"): {"metrics": scored("pneumonia", pneumonia), "seed": 1},
            ("pneumonia", "intensive"): {"metrics": scored("pneumonia", pneumonia - 0.02), "seed": 2},
            ("limb", "standard"): {"metrics": scored("limb", limb), "seed": 3},
            ("cardiomegaly", "standard"): cardiomegaly,
        }
        run = write_run(tmp_path / "runs", f"night{day}", outcomes, config, started=f"2026-11-{day}T01:00:00+00:00")
        pipeline.promote(run.run_id, run.runs_root)
        write_report(run)
    return run, run.report_md.read_text()


def test_first_screen_one_line_per_condition(tmp_path):
    """Before any detail: per condition its status (glyph and word), champion with AUC and interval, change since
    the previous night, the trend, and what needs a person; no empty header row anywhere."""
    _layout, report = _three_nights(tmp_path)
    assert (
        report.index("## This morning")
        < report.index("## Next steps")
        < report.index("## Contents")
        < report.index("## Key figures")
    )
    morning = _section(report, "This morning")
    pneumonia, limb = _row(morning, "pneumonia"), _row(morning, "limb")
    cardiomegaly = _row(morning, "cardiomegaly")
    champion = read_json(tmp_path / "registry" / "pneumonia.json")["champion"]
    low, high = champion["metrics"]["intervals"]["roc_auc"]["low"], champion["metrics"]["intervals"]["roc_auc"]["high"]
    assert pneumonia[2] == "standard, new tonight" and pneumonia[3] == f"0.85 ({low:.2f}–{high:.2f})"
    assert pneumonia[4] == "+0.030 (standard)" and pneumonia[5].startswith("↗ rising over 3 runs")
    assert pneumonia[5].endswith(" · [plot](trend/pneumonia.png)"), "the nightly trend plot beside the words"
    assert limb[1] == "⚠️ look" and limb[4] == "-0.040 (standard)" and limb[5].startswith("↘ falling over 3 runs")
    assert "test ROC AUC fell 0.040" in limb[6]
    assert cardiomegaly[1] == "❌ failed" and "1 of 1 failed (standard at validate)" in cardiomegaly[6]
    assert cardiomegaly[5].startswith("too few runs (2)")
    assert not re.search(r"^\|( *\|)+ *$", report, flags=re.M), "no table has an empty header row"
    for glyph in ("✅", "⚠️", "❌", "↗", "↘", "→"):  # a glyph may render as an empty box: a word always follows it
        for hit in re.finditer(re.escape(glyph), report):
            assert re.match(r"\s*\**\w", report[hit.end() : hit.end() + 6]), report[hit.start() : hit.end() + 20]


def test_next_steps_grouped_and_few(tmp_path):
    """The same advice for several models is one step naming them all; at most five come first, the rest at the end."""
    _layout, report = _three_nights(tmp_path)
    steps = [line for line in _section(report, "Next steps").splitlines() if re.match(r"^\d+\. ", line)]
    assert 1 <= len(steps) <= 5
    more = _section(report, "More next steps").splitlines() if "## More next steps" in report else []
    insufficient = [s for s in steps + more if "test tier insufficient" in s]
    # The tier fails for want of positive test images, and the advice says so instead of "train longer".
    assert len(insufficient) == 1 and "pneumonia/standard, pneumonia/intensive and limb/standard" in insufficient[0]
    assert "only 5 positive images" in insufficient[0] and "training longer would not" in insufficient[0]
    assert not any("more epochs may help" in s for s in steps + more), "epochs cannot lift a tier capped by positives"


def test_contents_link_every_section_and_html_collapses_models(tmp_path):
    """The contents list every later section and model; in HTML each model is a closed <details> whose heading has
    the id the contents link to, and the appendices are collapsed too."""
    _layout, report = _three_nights(tmp_path)
    contents = _section(report, "Contents")
    later = re.findall(r"^##+ (.+)$", report.split("## Contents", 1)[1], flags=re.M)
    links = re.findall(r"\[([^\]]+)\]\(#([^)]+)\)", contents)
    assert [text for text, _ in links] == [h.replace("`", "") for h in later]
    page = render_html(report, title="t", link=lambda url: url)
    for _, target in links:
        assert f'id="{target}"' in page, target
    assert (
        page.count("<details>")
        == page.count("</details>")
        == 4
        + sum(
            1
            for h in (
                "Issues encountered",
                "Run parameters",
                "Data",
                "Artifacts of this run",
                "Grad-CAM on a new image",
                "More next steps",
            )
            if f"## {h}\n" in report
        )
    )
    assert '<details>\n<summary><h3 id="pneumonia--standard">pneumonia / standard</h3>\n</summary>' in page
    assert "<main>" in page and "<script>" in page and "<script>" not in render_html(report, title="t", script=False)


def test_calibration_studies_and_cross_validation_are_shown(tmp_path):
    """A per-study limb model shows its study table, image table, kappa and reference; calibration and
    cross-validation get their own sentences; the best epoch is named as the saved model."""
    from tests.fakes import metrics_with

    calibration = {
        "method": "temperature scaling on logits",
        "temperature": 1.8,
        "fitted_on": "val",
        "measured_on": "test",
        "bins": 10,
        "before": {
            "calibration_error": {"value": 0.151, "interval": {"low": 0.12, "high": 0.18}},
            "brier": {"value": 0.2, "interval": {"low": 0.18, "high": 0.22}},
        },
        "after": {
            "calibration_error": {"value": 0.043, "interval": {"low": 0.03, "high": 0.07}},
            "brier": {"value": 0.17, "interval": {"low": 0.15, "high": 0.19}},
        },
    }
    limb = metrics_with(
        0.81,
        kappa=0.41,
        unit="study",
        n_images=181,
        study_aggregation="mean",
        reference="MURA humerus kappa 0.44 from scratch",
        calibration=calibration,
        image_level={**metrics_with(0.74), "kappa": 0.33},
    )
    limb["intervals"]["kappa"] = {"low": 0.22, "high": 0.58}
    small = metrics_with(0.7, estimate="cross-validation", crossval={"folds": 5, "repeats": 2, "models": 10})
    _, _, report = _report(
        tmp_path,
        {("limb", "standard"): {"metrics": limb, "seed": 1}, ("knee", "standard"): {"metrics": small, "seed": 2}},
    )
    assert "Scored **per study**" in report and "181 images" in report and "MURA humerus kappa 0.44" in report
    assert re.search(
        r"images', the threshold is fitted on val studies.*\n(- Published.*\n)?\n\| metric \(test, per study\)", report
    ), "the study table must start its own block"
    assert re.search(r"\| Cohen's kappa \| 0\.41\d? \(0\.22\d?–0\.58\d?\) \|", report)
    assert "| per image (secondary) |" in report
    assert re.search(
        r"temperature 1\.80 fitted on val.*ECE 0\.15\d* \(0\.12\d*–0\.18\d*\) → \*\*0\.04\d* "
        r"\(0\.03\d*–0\.07\d*\)\*\*",
        report,
    )
    assert "**Estimated by cross-validation**" in report and "2 × 5-fold" in report


def test_first_screen_says_planned_and_took_and_lists_the_cuts(tmp_path):
    """With a night plan: "planned N min, took M min" and every cut with its reason come before Next steps; the
    Night plan section gives each chain's predicted and actual minutes and its error; summary.json carries it."""
    config_path = write_config(tmp_path)
    run = write_run(tmp_path / "runs", "planned", {("pneumonia", "standard"): "ok"}, config_path)
    cut = {"rung": "standard_only", "condition": "limb_abnormalities", "profile": "intensive", "cost": None,
           "what": "not trained tonight (only standard)", "why": "the full plan is predicted at 834 min, over the "
           "240-min budget, and fewer epochs alone did not fit it"}  # fmt: skip
    epochs = {"rung": "epochs", "condition": "pneumonia", "profile": "standard", "what": "3 epochs instead of 6",
              "why": "over the budget", "cost": "best val AUC in its first 3 epochs: 0.910 against 0.930"}  # fmt: skip
    write_json(
        run.plan_json,
        {"budget_minutes": 240, "predicted_minutes": 231.4, "full_plan_minutes": 834.2, "fits": True,
         "cpu_id": "amd family 23 model 1 stepping 2 avx2", "speed_source": "training.json of run(s) night0",
         "cuts": [epochs, cut], "notes": ["cold night: budget 240 min"],
         "chains": [{"condition": "pneumonia", "profile": "standard", "epochs": 3, "epochs_asked": 6,
                     "predicted_minutes": {"total": 20.0}}]},
    )  # fmt: skip
    write_json(run.model("pneumonia", "standard").timings_json, {s: {"seconds": 300.0} for s in pipeline.STAGES})
    summary = write_report(run)
    report = run.report_md.read_text()
    first_screen = report[: report.index("## Next steps")]
    took = summary["night"]["took_minutes"]
    assert f"planned 231 min, took {took:.0f} min" in first_screen and "budget 240 min" in first_screen
    assert (
        "limb_abnormalities/intensive: not trained tonight (only standard) — the full plan is predicted" in first_screen
    )
    assert "pneumonia/standard: 3 epochs instead of 6" in first_screen and "cost: best val AUC" in first_screen
    assert _row(_section(report, "Night plan"), "pneumonia/standard") == [
        "pneumonia/standard",
        "3 (6)",
        "20.0",
        "20.0",
        "+0 %",
    ]
    assert summary["night"]["chains"][0]["actual_minutes"] == 20.0 and summary["night"]["worst_chain_error"] == 0.0


# --------------------------------------------------------------------------- one verdict, and why


def test_every_condition_at_look_is_one_look_verdict(tmp_path):
    """Two models that succeed but meet no gate: the verdict is "look" in summary.json, the title, the first screen,
    the e-mail subject and the verdict task alike; each row names the failing gate with figure and threshold and what
    would change it (here the number of positive val images, not training)."""
    from medcore.report.notify import _subject

    outcomes = {
        ("pneumonia", "standard"): {"metrics": metrics_with(0.75), "seed": 1},
        ("limb", "standard"): {"metrics": metrics_with(0.74), "seed": 2},
    }
    run, summary, report = _report(tmp_path, outcomes, gates="{roc_auc_low: 0.70}")
    assert summary["verdict"] == "look" and summary["needs"] == ["pneumonia", "limb"]
    assert report.startswith("# medcore training status report: look\n")
    pneumonia = _row(_section(report, "This morning"), "pneumonia")
    assert pneumonia[1] == "⚠️ look"
    assert "no model meets the gates: val AUC lower bound 0.56 < 0.70" in pneumonia[6]
    assert "only 4 positive val images" in pneumonia[6] and "not more training" in pneumonia[6]
    assert _subject(run).startswith("[medcore] look: pneumonia, limb · 2/2 models succeeded")
    assert pipeline.verdict(summary) == "look: pneumonia, limb" == summary["verdict_words"]
    assert summary["verdict_why"].startswith("pneumonia: no model meets the gates: val AUC lower bound 0.56 < 0.70")
    assert "| test tier |" in report, "the Models table's tier is the test split's, and says so"


def test_worse_than_chance_is_said_and_its_maps_are_no_evidence(tmp_path):
    """A test AUC interval wholly below 0.5 is called worse than chance, and a deletion test that favours its
    Grad-CAM does not make the maps evidence."""
    run, _summary, _ = _report(tmp_path, {("pneumonia", "standard"): {"metrics": metrics_with(0.30), "seed": 1}})
    paths = run.model("pneumonia", "standard")
    record = read_json(paths.gradcam_json)
    record["faithfulness"] = {
        "better_than_random": True,
        "gradcam_deletion_auc": 0.2,
        "random_deletion_auc": 0.4,
        "p_value": 0.0039,
        "images": 8,
        "steps": 8,
        "baseline": "blur",
    }
    write_json(paths.gradcam_json, record)
    write_report(run)
    report = run.report_md.read_text()
    assert "is worse than chance (test AUC 0.30 (0.11–0.45))" in _row(_section(report, "This morning"), "pneumonia")[6]
    assert "**Worse than chance**" in report and "— better than random" not in report
    assert "not evidence" in report
    assert any("worse than chance" in s for s in _section(report, "Next steps").splitlines())


def test_a_refused_plan_leaves_a_short_report_and_one_verdict(tmp_path):
    """epochs 0 refused by plan: run.json records why, promote decides nothing, the report says the run did not
    start and why, and the verdict fails with that one sentence."""
    from medcore.errors import ConfigError, StageError

    config = write_config(tmp_path)
    with pytest.raises(ConfigError, match="epochs override must be 1 to 1000"):
        pipeline.plan_run(config, "refused", epochs=0, params={"epochs": 0})
    run = RunLayout(tmp_path / "runs", "refused")
    assert read_json(run.run_json)["jobs"] == [] and "got 0" in read_json(run.run_json)["plan_error"]
    assert pipeline.promote("refused", run.runs_root)["decisions"] == {} and not run.promotion_json.exists()
    summary = pipeline.report("refused", run.runs_root)
    report = run.report_md.read_text()
    assert report.startswith("# medcore training status report: failed, the run did not start")
    assert "The run did not start: **epochs override must be 1 to 1000" in report
    assert summary["verdict"] == "failed" and summary["planned"] == 0
    with pytest.raises(StageError, match="the run did not start: epochs override must be 1 to 1000"):
        pipeline.verdict(summary)
