"""Typed artefacts: the files stages hand each other load as models, old files too, and bad ones fail in one line.

The files here are written by the real writers (evaluation, the contract, validation, the night plan, the
registry, the report) or by tests/fakes.py, never typed in by hand, so a writer that drifts from its model
fails here.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcore import artefacts, config, pipeline
from medcore.artefacts import (
    ArtefactError,
    Interval,
    Metrics,
    ModelContract,
    NightlyPlan,
    RegistryRecord,
    RunSummary,
    TrainingRecord,
    TrendRow,
    ValidationSummary,
)
from medcore.assess import evaluation
from medcore.errors import MedcoreError
from medcore.jsonio import read_json, write_json
from medcore.layout import RegistryLayout
from medcore.nights import registry, trend
from medcore.nights.nightly import plan_night
from tests import fakes
from tests.fakes import metrics_with, paired, write_config, write_run

LOADERS = {
    "metrics.json": artefacts.load_metrics,
    "model.json": artefacts.load_contract,
    "training.json": artefacts.load_training,
    "validation.json": artefacts.load_validation,
    "nightly.json": artefacts.load_nightly,
    "summary.json": artefacts.load_summary,
}


def _roundtrip(model):
    """`model` written as the stages write JSON (jsonio) and read back through its type."""
    return type(model).model_validate_json(model.model_dump_json())


# --------------------------------------------------------------------------- the metric names


def test_metric_names_are_declared_once():
    """config, evaluation, the registry and the fakes use artefacts' declaration, not copies of it."""
    assert config.METRICS is artefacts.METRICS
    assert config.GATE_METRICS is artefacts.GATE_METRICS
    assert evaluation.METRICS is artefacts.METRICS
    assert evaluation.SELECTION_FIGURES is artefacts.SELECTION_FIGURES
    assert registry.KEPT_FIGURES is artefacts.KEPT_FIGURES
    assert fakes.SELECTION_FIGURES is artefacts.SELECTION_FIGURES


def test_the_subsets_are_derived_from_the_metrics():
    """Gates name the higher-is-better figures; selection keeps the gateable ones; the registry all but kappa."""
    assert artefacts.GATE_METRICS == ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc")
    selection = ("n", "n_positive", *artefacts.GATE_METRICS, "threshold", "intervals")
    assert selection == artefacts.SELECTION_FIGURES
    kept = [name for name in artefacts.KEPT_FIGURES if name in artefacts.METRICS]
    assert kept == [name for name in artefacts.METRICS if name != "kappa"]
    # The fakes' selection figures are evaluation's, less pr_auc (their metrics have none), in the same order.
    faked = metrics_with(0.8)["selection"]
    assert list(faked)[:-2] == [k for k in artefacts.SELECTION_FIGURES if k in fakes.BASE_METRICS]


def test_no_other_module_lists_the_metric_names_again():
    """No tuple, list or set elsewhere holds the same metric names as a declared list: that is a copy to import.

    Shorter picks that are a choice of their own (the report's table columns) are not copies; a typing.Literal
    spelling the gate names out (config.GateName, checked against GATE_METRICS there) is a type, not a list.
    """
    declared = {
        frozenset(names) & frozenset(artefacts.METRICS)
        for names in (artefacts.METRICS, artefacts.GATE_METRICS, artefacts.SELECTION_FIGURES, artefacts.KEPT_FIGURES)
    }
    root = Path(__file__).resolve().parent.parent
    copies = []
    for path in [*(root / "medcore").rglob("*.py"), root / "tests" / "fakes.py"]:
        if path.parent.name == "artefacts":
            continue
        tree = ast.parse(path.read_text())
        literal_types = {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and id(node) not in literal_types:
                names = frozenset(e.value for e in node.elts if isinstance(e, ast.Constant)) & set(artefacts.METRICS)
                if names in declared:
                    copies.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not copies, copies


# --------------------------------------------------------------------------- real writers, typed readers


def _scores(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return labels, np.clip(0.3 * labels + rng.uniform(0, 0.7, n), 0, 1)


def _real_metrics() -> dict:
    """metrics.json as pipeline.evaluate assembles it: test figures, selection figures, the paired comparison."""
    (val_y, val_p), (test_y, test_p) = _scores(1), _scores(2)
    groups = np.array([f"p{i // 2}" for i in range(len(test_y))])
    metrics = evaluation.evaluate_scores(val_y, val_p, test_y, test_p, groups, seed=3)
    val = pd.DataFrame({"label": val_y, "group": [f"v{i // 2}" for i in range(len(val_y))]})
    metrics["selection"] = evaluation.selection_figures(val, val_p)
    comparison = evaluation.paired_auc_difference(val_y, val_p, val_p * 0.9, resamples=50)
    metrics["versus_champion"] = {"champion": "run1/standard", "selection": comparison, "test": None}
    metrics["temperature"] = 1.0
    metrics["plots"] = {"roc": Path("/runs/x/plots/roc.png")}
    return metrics


def test_metrics_from_evaluation_load_and_roundtrip(tmp_path):
    """Evaluation's own output, written with jsonio, loads as Metrics and survives a round trip."""
    written = _real_metrics()
    path = write_json(tmp_path / "metrics.json", written)
    metrics = artefacts.load_metrics(path)
    assert metrics.schema_version == 1
    assert metrics.roc_auc == pytest.approx(written["roc_auc"])
    assert metrics.intervals["roc_auc"].bounds() == registry.interval(written, "roc_auc")
    assert metrics.selection.split == "val" and metrics.selection.roc_auc == pytest.approx(
        written["selection"]["roc_auc"]
    )
    assert metrics.versus_champion.selection.delta == pytest.approx(written["versus_champion"]["selection"]["delta"])
    assert metrics.quality.tier == written["quality"]["tier"] and metrics.bootstrap.unit == "patient"
    assert _roundtrip(metrics) == metrics


def test_study_level_metrics_keep_the_image_figures(tmp_path):
    """A per-study metrics.json (MURA) has its image-level figures as a typed `image_level`."""
    (val_y, val_p), (test_y, test_p) = _scores(4), _scores(5)
    val = pd.DataFrame({"label": val_y, "probability": val_p, "study": [f"s{i // 2}" for i in range(len(val_y))]})
    test = pd.DataFrame({"label": test_y, "probability": test_p, "study": [f"t{i // 2}" for i in range(len(test_y))]})
    images = evaluation.evaluate_scores(val_y, val_p, test_y, test_p)
    metrics = artefacts.load_metrics(write_json(tmp_path / "metrics.json", evaluation.study_level(val, test, images)))
    assert metrics.unit == "study" and metrics.image_level.n == len(test_y) and metrics.n == len(test_y) // 2
    assert _roundtrip(metrics) == metrics


def test_contract_from_training_and_evaluation(tmp_path):
    """model.json as training writes it, then as evaluation completes it, loads as ModelContract."""
    from medcore.model.contract import record_evaluation, training_contract

    profile = config.Profile(name="standard", image_size=64)
    contract = training_contract(profile, seed=7, precision="float32", gradcam_layer="relu", versions={"keras": "3"})
    trained = artefacts.load_contract(write_json(tmp_path / "model.json", contract))
    assert trained.input_shape == [64, 64, 3] and trained.threshold is None and trained.resize == profile.resize
    metrics = _real_metrics()
    path = record_evaluation(tmp_path / "model.json", contract, metrics, tmp_path / "metrics.json")
    evaluated = artefacts.load_contract(path)
    assert evaluated.threshold == pytest.approx(metrics["threshold"]) and evaluated.temperature == 1.0
    assert evaluated.test_metrics["quality_tier"] == metrics["quality"]["tier"]
    assert _roundtrip(evaluated) == evaluated


def test_validation_summary_from_a_validation_result(tmp_path):
    """ValidationResult.to_dict(), findings sorted and all, loads as ValidationSummary."""
    from medcore.data.validation import Severity, ValidationResult

    result = ValidationResult("pneumonia", tmp_path, counts={"train": {"positive": 3, "negative": 4}})
    result.add("class_too_small", Severity.ERROR, "test split has 0 positive images")
    result.add("near_duplicate", Severity.WARNING, "2 near duplicates", ["a.png", "b.png"])
    summary = artefacts.load_validation(write_json(tmp_path / "validation.json", result.to_dict()))
    assert not summary.ok and summary.reason == result.reason
    assert [(f.code, f.severity, f.count) for f in summary.findings] == [
        ("class_too_small", "error", 1),
        ("near_duplicate", "warning", 2),
    ]
    assert summary.counts["train"]["negative"] == 4 and _roundtrip(summary) == summary


TONIGHT = {"dataset_fingerprint": "d", "config_digest": "c", "code_version": "v"}


@pytest.mark.parametrize(
    ("champion", "mode"),
    [
        (None, "retrain"),
        ({"run_id": "r", "profile": "standard", "model_available": True}, "continue"),
        ({"run_id": "r", "profile": "s", **TONIGHT}, "skip"),
    ],
)
def test_nightly_plans_load(tmp_path, champion, mode):
    """Each kind of night plan_night makes loads as NightlyPlan with its mode."""
    tonight = TONIGHT
    clean = {"images": 0, "by_split": {}, "examples": []}
    plan = {**plan_night("continue", champion, tonight, clean), "policy": "continue", **tonight, "champion": champion}
    loaded = artefacts.load_nightly(write_json(tmp_path / "nightly.json", plan))
    assert loaded.mode == mode and loaded.reason == plan["reason"] and _roundtrip(loaded) == loaded


def test_typed_objects_write_what_readers_read(tmp_path):
    """An object built from the models, written with jsonio, is read back equal (training.json, summary.json)."""
    training = TrainingRecord(epochs_run=2, epochs_planned=3, best_val_auc=0.9, versions={"keras": "3"}, machine={})
    summary = RunSummary(run_id="r1", verdict="OK", planned=2, succeeded=2, nights={"knee": {"mode": "retrain"}})
    for model, loader in ((training, artefacts.load_training), (summary, artefacts.load_summary)):
        path = write_json(tmp_path / type(model).FILE, model.model_dump(exclude_unset=True))
        assert loader(path) == model


def test_registry_record_summary_and_trend_from_real_nights(tmp_path, monkeypatch):
    """Two nights promoted through pipeline.promote: the registry record, the trend and summary.json load typed."""
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
    settings, runs = write_config(tmp_path), tmp_path / "runs"
    layout = RegistryLayout(tmp_path / "registry")
    first = write_run(runs, "run1", {("pneumonia", "standard"): {"metrics": metrics_with(0.86)}}, settings)
    pipeline.promote(first.run_id, runs)
    second = write_run(
        runs,
        "run2",
        {("pneumonia", "standard"): {"metrics": metrics_with(0.84, versus=paired("run1/standard", 0.84, 0.86))}},
        settings,
        started="2026-11-28T01:00:00+00:00",
    )
    pipeline.promote(second.run_id, runs)

    record = artefacts.load_registry_record(layout.record("pneumonia"))
    assert record.champion.run_id == "run1" and record.champion.metrics.roc_auc == 0.86
    assert record.champion.metrics.intervals["roc_auc"].bounds() == (0.6677, 1.0)
    assert [h.decision for h in record.history] == [registry.KEPT, registry.PROMOTED]
    assert _roundtrip(record) == record

    rows = artefacts.load_trend(layout.trend("pneumonia"))
    assert [r.run_id for r in rows] == ["run1", "run2"] and rows[1].champion_selection_auc == 0.86
    assert rows[0].champion_selection_auc is None, "an empty cell is no value"

    from medcore.report.render import write_report

    written = write_report(second)
    summary = artefacts.load_summary(second.summary_json)
    assert (summary.run_id, summary.verdict, summary.planned) == ("run2", written["verdict"], written["planned"])


def test_trend_row_has_the_trend_columns():
    """TrendRow's fields are trend.csv's columns, in order (schema_version is not a column)."""
    assert [name for name in TrendRow.model_fields if name != "schema_version"] == trend.TREND_COLUMNS


# --------------------------------------------------------------------------- old files, new files, bad files


def test_every_json_file_the_fakes_write_loads(tmp_path):
    """Run folders from tests/fakes.py (files without a schema_version, as today's) load through their loader."""
    run = write_run(tmp_path, "r1", {("pneumonia", "standard"): "ok", ("knee", "standard"): "validate"})
    loaded = {}
    for path in sorted(run.root.rglob("*.json")):
        if path.name in LOADERS:
            assert "schema_version" not in read_json(path)
            loaded[path.name] = LOADERS[path.name](path)
            assert loaded[path.name].schema_version == 1
    assert set(loaded) == {"metrics.json", "model.json", "training.json", "validation.json"}
    assert loaded["metrics.json"].selection.roc_auc == fakes.BASE_METRICS["roc_auc"]


def test_an_interval_stored_as_a_pair_loads_as_an_interval():
    """The registry's older records hold [low, high]; readers see one shape."""
    assert Interval.model_validate([0.6, 0.9]) == Interval(low=0.6, high=0.9)
    metrics = Metrics.model_validate({**fakes.BASE_METRICS, "intervals": {"roc_auc": [0.6, 0.9], "kappa": None}})
    assert metrics.intervals["roc_auc"].bounds() == (0.6, 0.9) and metrics.intervals["kappa"] is None


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (Metrics, fakes.BASE_METRICS),
        (ModelContract, {"architecture": "DenseNet121", "threshold": 0.4}),
        (TrainingRecord, fakes.TRAINING),
        (ValidationSummary, {"ok": True}),
        (NightlyPlan, {"mode": "retrain"}),
        (RunSummary, {"run_id": "r", "verdict": "OK"}),
        (RegistryRecord, {"condition": "knee", "champion": None, "history": []}),
    ],
)
def test_a_newer_version_is_refused_in_one_line(tmp_path, model, data):
    """A file from a newer medcore is refused, naming the file; the same file unversioned, or at 1, loads."""
    path = tmp_path / "artefact.json"
    path.write_text(json.dumps(data))
    assert artefacts.load_artefact(model, path).schema_version == 1
    path.write_text(json.dumps({**data, "schema_version": 1}))
    assert artefacts.load_artefact(model, path).schema_version == 1
    path.write_text(json.dumps({**data, "schema_version": 2}))
    with pytest.raises(MedcoreError) as caught:
        artefacts.load_artefact(model, path)
    message = str(caught.value)
    assert message == f"{path}: schema_version 2 is newer than this medcore reads (1); update medcore"


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("metrics.json", {"selection": {**metrics_with(0.8)["selection"], "roc_auc": "high"}}, "selection.roc_auc"),
        ("metrics.json", {"intervals": {"roc_auc": {"low": "x"}}}, "intervals.roc_auc.low"),
        ("model.json", {"temperature": -1}, "temperature"),
        ("model.json", {"resize": "crop"}, "resize"),
        (
            "validation.json",
            {"findings": [{"code": "x", "severity": "fatal", "count": 1, "message": "m"}]},
            "findings.0.severity",
        ),
        ("nightly.json", {"mode": "sometimes"}, "mode"),
        ("training.json", {"epochs_run": "three"}, "epochs_run"),
    ],
)
def test_a_bad_field_is_one_line_naming_file_and_field(tmp_path, name, change, field):
    """A field of the wrong kind fails as an ArtefactError (a MedcoreError) naming the file and the first bad field."""
    base = {
        "metrics.json": fakes.BASE_METRICS,
        "model.json": {"threshold": 0.4},
        "validation.json": {"ok": True},
        "nightly.json": {"mode": "retrain"},
        "training.json": fakes.TRAINING,
    }[name]
    path = write_json(tmp_path / name, {**base, **change})
    with pytest.raises(ArtefactError) as caught:
        LOADERS[name](path)
    message = str(caught.value)
    assert isinstance(caught.value, MedcoreError) and "\n" not in message
    assert message.startswith(f"{path}: {field}"), message


@pytest.mark.parametrize(
    ("text", "words"),
    [("{not json", "not valid JSON"), ("[1, 2]", "not a metrics.json (a JSON object expected)")],
)
def test_a_file_that_is_not_an_artefact_is_one_line(tmp_path, text, words):
    """Not JSON, or JSON but no object: one line naming the file."""
    path = tmp_path / "metrics.json"
    path.write_text(text)
    with pytest.raises(ArtefactError, match=re.escape(words)) as caught:
        artefacts.load_metrics(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_a_bad_trend_row_names_its_line(tmp_path):
    """A trend.csv cell of the wrong kind names the file, the line and the column."""
    path = tmp_path / "trend.csv"
    path.write_text(trend.trend_csv([{"night": "n1", "run_id": "r1", "test_nights": "many"}]))
    with pytest.raises(ArtefactError, match=r"trend.csv: line 2: test_nights: input should be a valid integer"):
        artefacts.load_trend(path)
