"""The report is computed from the run's files, whatever state the chains ended in."""

from __future__ import annotations

from medcore.jsonio import write_json
from medcore.layout import RunLayout
from medcore.report import write_report

METRICS = {"n": 10, "accuracy": 0.8, "precision": 0.75, "recall": 0.6, "specificity": 0.9, "f1": 0.667,
           "roc_auc": 0.8123, "threshold": 0.42, "confusion_matrix": {"tp": 3, "tn": 5, "fp": 1, "fn": 1}}
TRAINING = {"epochs_run": 3, "epochs_planned": 5, "early_stopped": True, "wall_seconds": 120.0, "image_size": 32,
            "train_images": 50, "images_per_second": 1.25, "best_val_auc": 0.9, "dataset_fingerprint": "abc",
            "device": "CPU", "precision": "float32", "threads": None, "execution": "eager", "versions": {}}


def _run(tmp_path, outcomes: dict[str, str]) -> RunLayout:
    run = RunLayout(tmp_path, "manual__2026-11-27T01:00:00+00:00")
    jobs = [{"condition": c, "profile": "standard"} for c in outcomes]
    write_json(run.run_json, {"run_id": run.run_id, "started": "2026-11-27T01:00:00+00:00", "config": "c.yaml",
                              "data_root": "/data", "params": {}, "jobs": jobs})
    for condition, outcome in outcomes.items():
        paths = run.model(condition, "standard")
        write_json(paths.validation_json, {"ok": outcome != "validate", "findings": [
            {"code": "class_too_small", "severity": "error" if outcome == "validate" else "warning", "count": 1,
             "message": "test split has 0 positive images", "examples": []}]})
        if outcome == "ok":
            write_json(paths.training_json, TRAINING)
            write_json(paths.metrics_json, METRICS)
            write_json(paths.gradcam_json, {"layer": "relu", "overlays": [
                {"file": paths.gradcam_overlay("tp", 1), "kind": "tp", "probability": 0.9, "label": 1}]})
        elif outcome != "killed":
            write_json(paths.failure_json, {"stage": outcome, "error": f"boom in {outcome}"})
    return run


def test_mixed_outcomes(tmp_path):
    """Successes show metrics and overlays; failures show stage and error; a killed chain is named too."""
    run = _run(tmp_path, {"pneumonia": "ok", "cardiomegaly": "validate", "limb": "train", "knee": "killed"})
    summary = write_report(run)
    report = run.report_md.read_text()
    assert (summary["planned"], summary["succeeded"], summary["failed"]) == (4, 1, 3)
    assert "| pneumonia | standard | ✅ succeeded | 0.800 | 0.750 | 0.600 | 0.900 | 0.812 | 0.420 | 3/5 (early stop) | 2.0 |" in report
    assert "❌ failed at validate" in report and "`boom in validate`" in report
    assert "❌ failed at train" in report and "`boom in train`" in report
    assert "❌ incomplete at validate" in report and "recorded no error" in report
    assert "![tp p=0.90](pneumonia/standard/gradcam/tp_01.png)" in report
    assert "success rate | 25.0 %" in report
    assert "Research use only" in report


def test_all_failed(tmp_path):
    """With no success the report still renders, says so, and shows no best model."""
    run = _run(tmp_path, {"pneumonia": "evaluate", "cardiomegaly": "gradcam"})
    write_report(run)
    report = run.report_md.read_text()
    assert "**no model succeeded**" in report
    assert "best model" not in report
