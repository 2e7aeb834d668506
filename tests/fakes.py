"""Run folders as the stages leave them, written in milliseconds: no TensorFlow, real PNGs and CSVs.

Tests of promotion, the report, the e-mail and the UI page build runs here, so every figure they
assert can be traced to the metrics.json written below.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from medcore.artefacts import SELECTION_FIGURES
from medcore.jsonio import atomic_write_bytes, write_json
from medcore.layout import ModelLayout, RunLayout

BASE_METRICS: dict[str, Any] = {
    "n": 10,
    "n_positive": 5,
    "accuracy": 0.8,
    "precision": 0.75,
    "recall": 0.6,
    "specificity": 0.9,
    "f1": 0.667,
    "roc_auc": 0.8123,
    "threshold": 0.42,
    "confusion_matrix": {"tp": 3, "tn": 5, "fp": 1, "fn": 1},
    "threshold_rule": "youden",
    "threshold_split": "val",
    "evaluated_split": "test",
    "intervals": {
        "accuracy": {"low": 0.55, "high": 0.95},
        "precision": {"low": 0.333, "high": 1.0},
        "recall": {"low": 0.2, "high": 1.0},
        "specificity": {"low": 0.667, "high": 1.0},
        "roc_auc": {"low": 0.62, "high": 0.96},
    },
    "bootstrap": {"resamples": 1000, "confidence": 0.95, "seed": 1, "unit": "image", "groups": 10},
    "quality": {
        "tier": "insufficient",
        "value": 0.62,
        "tiers": {"excellent": 0.9, "good": 0.8, "moderate": 0.7},
        "note": "research-grade discrimination only, not fitness for clinical use",
    },
}
TRAINING: dict[str, Any] = {
    "epochs_run": 3,
    "epochs_planned": 5,
    "early_stopped": True,
    "wall_seconds": 120.0,
    "image_size": 32,
    "train_images": 50,
    "images_per_second": 1.25,
    "best_val_auc": 0.9,
    "dataset_fingerprint": "abc",
    "device": "CPU",
    "precision": "float32",
    "threads": None,
    "execution": "eager",
    "versions": {},
    "weights_used": "none (no shared backbone yet; run `medcore pretrain`)",
}
TEST_FILES = [(f"test/{'POS' if i % 2 else 'NEG'}/{i}.png", i % 2) for i in range(10)]
STAGES = ("validate", "train", "evaluate", "gradcam")


def png(seed: int, size: int = 24) -> bytes:
    """A small, valid PNG whose pixels depend on `seed` (so two images never compare equal by accident)."""
    import cv2

    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


def metrics_with(
    roc_auc: float, selection_auc: float | None = None, versus: dict | None = None, **figures: Any
) -> dict[str, Any]:
    """BASE_METRICS with another ROC AUC (its interval moved along) and any other figures replaced.

    The selection (val) figures, which decide, equal the test figures unless `selection_auc` says
    otherwise; `versus` is the paired comparison with the champion that evaluation would record.
    """
    metrics = copy.deepcopy(BASE_METRICS)
    shift = roc_auc - metrics["roc_auc"]
    metrics["roc_auc"] = roc_auc
    metrics["intervals"]["roc_auc"] = {"low": round(0.62 + shift, 4), "high": round(min(1.0, 0.96 + shift), 4)}
    metrics.update(figures)
    selection = copy.deepcopy({k: metrics[k] for k in SELECTION_FIGURES if k in metrics})  # no pr_auc here
    if selection_auc is not None:
        move = selection_auc - roc_auc
        selection["roc_auc"] = selection_auc
        selection["intervals"]["roc_auc"] = {
            k: round(v + move, 4) for k, v in selection["intervals"]["roc_auc"].items()
        }
    metrics["selection"] = {**selection, "split": "val", "quality_tier": metrics["quality"]["tier"]}
    metrics["versus_champion"] = versus
    return metrics


def paired(
    champion: str, challenger_auc: float, champion_auc: float, half_width: float = 0.01, n: int = 8
) -> dict[str, Any]:
    """The versus_champion record evaluation writes: selection and test paired with `champion` (run/profile)."""
    delta = challenger_auc - champion_auc
    one = {
        "n": n,
        "n_positive": n // 2,
        "unit": "image",
        "units": n,
        "challenger_auc": challenger_auc,
        "champion_auc": champion_auc,
        "delta": delta,
        "low": delta - half_width,
        "high": delta + half_width,
        "challenger_interval": [challenger_auc - 0.1, min(1.0, challenger_auc + 0.1)],
        "champion_interval": [champion_auc - 0.1, min(1.0, champion_auc + 0.1)],
        "resamples": 1000,
        "confidence": 0.95,
        "method": "paired stratified bootstrap",
    }
    return {"champion": champion, "selection": one, "test": dict(one)}


def write_config(
    folder: Path, gates: str = "{roc_auc: 0.70, recall: 0.50}", margin: float = 0.02, extra: str = ""
) -> Path:
    """A minimal config (no data needed) whose registry lives in `folder`/registry."""
    path = Path(folder) / "medcore.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        runs_root: runs
        conditions:
          pneumonia: {{dataset: pneumonia, layout: folders, positive: [PNEUMONIA], negative: [NORMAL]}}
          cardiomegaly: {{dataset: cardiomegaly, layout: folders, positive: ["1"], negative: ["0"]}}
          limb: {{dataset: limb, layout: folders, positive: [positive], negative: [negative]}}
          knee: {{dataset: knee, layout: folders, positive: [a], negative: [b]}}
        profiles:
          standard: {{}}
          intensive: {{}}
        registry: {{gates: {gates}, margin: {margin}}}
        """)
        + extra
    )
    return path


def write_model(
    paths: ModelLayout,
    outcome: str = "ok",
    *,
    metrics: dict[str, Any] | None = None,
    test_files: list[tuple[str, int]] | None = None,
    seed: int = 0,
) -> None:
    """One (condition, profile) chain that succeeded (`ok`), failed at a stage, or was `killed` silently."""
    files = TEST_FILES if test_files is None else test_files
    findings = [
        {
            "code": "class_too_small",
            "severity": "error" if outcome == "validate" else "warning",
            "count": 1,
            "message": "test split has 0 positive images",
            "examples": [],
        }
    ]
    write_json(
        paths.validation_json,
        {
            "ok": outcome != "validate",
            "fingerprint": f"data{seed:04d}",
            "counts": {
                "train": {"positive": 20, "negative": 22},
                "val": {"positive": 4, "negative": 4},
                "test": {"positive": 5, "negative": 5},
            },
            "findings": findings,
        },
    )
    if outcome == "validate":
        write_json(paths.failure_json, {"stage": "validate", "error": "boom in validate"})
        return

    def sha(name: str) -> str:  # a stand-in content hash, one per image name
        import hashlib

        return hashlib.sha256(name.encode()).hexdigest()

    rows = ["path,relpath,raw_label,label,split,group,sha256"]
    rows += [f"/data/train/{i}.png,train/{i}.png,{i % 2},{i % 2},train,g{i},{sha(f'train/{i}')}" for i in range(6)]
    rows += [f"/data/val/{i}.png,val/{i}.png,{i % 2},{i % 2},val,v{i},{sha(f'val/{i}')}" for i in range(4)]
    rows += [f"/data/{rel},{rel},{label},{label},test,t{i},{sha(rel)}" for i, (rel, label) in enumerate(files)]
    atomic_write_bytes(paths.split_csv, ("\n".join(rows) + "\n").encode())
    if outcome == "killed":
        return
    if outcome == "train":
        write_json(paths.failure_json, {"stage": "train", "error": "boom in train"})
        return
    atomic_write_bytes(paths.model, b"not really a keras file " + str(seed).encode())
    write_json(paths.model_contract, {"architecture": "DenseNet121", "input_shape": [32, 32, 3], "threshold": 0.42})
    write_json(paths.training_json, TRAINING)
    if outcome == "evaluate":
        write_json(paths.failure_json, {"stage": "evaluate", "error": "boom in evaluate"})
        return
    figures = metrics or metrics_with(BASE_METRICS["roc_auc"])
    write_json(paths.metrics_json, figures)
    if outcome == "gradcam":
        write_json(paths.failure_json, {"stage": "gradcam", "error": "layer 'relu' not found in the model"})
        return
    overlays = []
    for rank, kind in enumerate(("tp", "fn"), start=1):
        target = paths.gradcam_overlay(kind, 1)
        atomic_write_bytes(target, png(seed * 10 + rank))
        overlays.append(
            {
                "file": target,
                "kind": kind,
                "probability": 0.9 if kind == "tp" else 0.2,
                "label": 1,
                "image": files[0][0],
            }
        )
    atomic_write_bytes(paths.gradcam_contact_sheet, png(seed * 10 + 9, size=48))
    write_json(
        paths.gradcam_json,
        {
            "layer": "relu",
            "model_path": paths.model,
            "overlays": overlays,
            "contact_sheet": paths.gradcam_contact_sheet,
        },
    )


def write_run(
    runs_root: Path,
    run_id: str,
    outcomes: dict[tuple[str, str], Any],
    config: Path | str = "c.yaml",
    started: str = "2026-11-27T01:00:00+00:00",
    params: dict[str, Any] | None = None,
) -> RunLayout:
    """A run folder: run.json plus one chain per (condition, profile). An outcome is a stage name, `ok`,
    `killed`, or a dict of `write_model` keyword arguments (outcome `ok` unless it says otherwise)."""
    run = RunLayout(Path(runs_root), run_id)
    jobs = [
        {
            "run_id": run_id,
            "runs_root": str(runs_root),
            "config": str(config),
            "condition": c,
            "profile": p,
            "epochs": None,
        }
        for c, p in outcomes
    ]
    write_json(
        run.run_json,
        {
            "run_id": run_id,
            "started": started,
            "config": str(config),
            "data_root": "/data",
            "params": params or {},
            "jobs": jobs,
        },
    )
    for (condition, profile), outcome in outcomes.items():
        options = outcome if isinstance(outcome, dict) else {"outcome": outcome}
        write_model(run.model(condition, profile), **options)
    return run


def kill_after_first_epoch(code: str, args: list[str], metadata: Path, timeout: float = 300) -> None:
    """Run `python -c code *args`, SIGKILL it once Keras' BackupAndRestore `metadata` records a finished epoch."""
    errors = tempfile.TemporaryFile()  # noqa: SIM115 closed below, after the worker
    worker = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=errors)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and worker.poll() is None:
            if metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 1:
                break
            time.sleep(0.2)
        if worker.poll() is not None:
            errors.seek(0)
            raise AssertionError(f"the job ended before it could be killed: {errors.read()[-3000:].decode()}")
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
        errors.close()
