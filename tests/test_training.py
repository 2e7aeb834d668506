"""Training faults: a killed run resumes where it stopped; a failed run leaves the old model alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from medcore import pipeline
from medcore.config import load_config
from medcore.jsonio import read_json
from medcore.layout import RunLayout
from medcore.training import class_weights

TRAIN_JOB = "import json, sys; from medcore import pipeline; pipeline.train(json.loads(sys.argv[1]))"


def _job(config_path, run_id: str, epochs: int | None = None) -> dict:
    config = load_config(config_path)
    return {"run_id": run_id, "runs_root": str(config.runs_root), "config": str(config.path),
            "condition": "knee_osteoporosis", "profile": "standard", "epochs": epochs}


def test_class_weights_balance_the_classes():
    """Weights are inversely proportional to class frequency and average to one per example."""
    weights = class_weights(pd.Series([1, 1, 1, 0]).to_numpy())
    assert weights[0] == pytest.approx(2.0) and weights[1] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_killed_training_resumes_from_the_last_finished_epoch(tiny_config):
    """SIGKILL after epoch 1; the rerun starts at epoch 2, finishes all 3, and keeps one history."""
    job = _job(tiny_config, "kill-test", epochs=3)
    pipeline.validate(job)
    paths = RunLayout(job["runs_root"], job["run_id"]).model(job["condition"], job["profile"])
    metadata = paths.backup_dir / "fine_tune" / "training_metadata.json"

    worker = subprocess.Popen([sys.executable, "-c", TRAIN_JOB, json.dumps(job)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and worker.poll() is None:
            if metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 1:
                break
            time.sleep(0.2)
        assert worker.poll() is None, "training ended before it could be killed"
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    assert not paths.model.exists(), "a killed run must not leave a model behind"

    rerun = subprocess.run([sys.executable, "-c", TRAIN_JOB, json.dumps(job)], capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = read_json(paths.training_json)
    assert record["resumed_from_epoch"] >= 1
    assert record["epochs_run"] == 3
    assert pd.read_csv(paths.history_csv)["epoch"].tolist() == [0, 1, 2]
    assert paths.model.exists() and not (paths.backup_dir / "fine_tune").exists()


def test_failed_training_leaves_the_previous_model_untouched(tiny_config):
    """A training that crashes mid-way keeps the earlier model.keras byte for byte and records the failure."""
    job = _job(tiny_config, "fail-test", epochs=1)
    pipeline.validate(job)
    paths = RunLayout(job["runs_root"], job["run_id"]).model(job["condition"], job["profile"])
    paths.model.write_bytes(b"the previous, good model")
    split = pd.read_csv(paths.split_csv)
    split.loc[split["split"] == "train", "path"] = str(paths.root / "vanished.jpg")  # files deleted under us
    split.to_csv(paths.split_csv, index=False)

    with pytest.raises(Exception):
        pipeline.train(job)
    assert paths.model.read_bytes() == b"the previous, good model"
    assert read_json(paths.failure_json)["stage"] == "train"
    assert not [p for p in paths.root.iterdir() if ".tmp" in p.name]
