"""The training worker dies in the middle of a training task: Airflow retries it, training resumes, nothing is lost.

The `training` worker (and every process under it, training included) gets SIGKILL after the first
finished epoch, as when that machine loses power; the `default` worker, the other machine, runs on.
The scheduler notices the missing task heartbeats, marks the try failed with a retry left, a freshly
started training worker picks the retry up, Keras' BackupAndRestore resumes after the last finished
epoch, and the other worker evaluates, explains, promotes and reports the model as if nothing happened.
"""

from __future__ import annotations

import hashlib
import json
import time

import pandas as pd

from medcore.jsonio import read_json
from tests.integration.cluster import WORKERS, running

CONDITION, PROFILE, EPOCHS = "knee_osteoporosis", "standard", 3


def _finished_epochs(metadata) -> int:
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_worker_mid_training_retries_and_resumes(cluster):
    run_id = cluster.trigger({"conditions": [CONDITION], "profiles": [PROFILE], "epochs": EPOCHS})
    model_dir = cluster.run_dir(run_id) / CONDITION / PROFILE
    metadata = model_dir / "backup" / "fine_tune" / "training_metadata.json"

    deadline = time.monotonic() + 420
    while _finished_epochs(metadata) < 1:
        assert time.monotonic() < deadline, f"no finished epoch in time: {cluster.states(run_id)}"
        assert cluster.run(run_id)["state"] in ("queued", "running"), cluster.states(run_id)
        time.sleep(0.2)
    train = cluster.task_instance(run_id, "model_chain.train", 0)
    assert (train["state"], train["try_number"]) == ("running", 1), train

    killed = cluster.kill_worker("training").killed
    assert cluster.worker("default").alive(), "only the training machine went down"
    assert not [pid for pid, started in killed if running(pid, started)], "every process of the worker is gone"
    assert len(killed) >= 4, f"the worker, its pool process, the task supervisor and the training: {killed}"
    assert not (model_dir / "model.keras").exists() and not (model_dir / "training.json").exists(), (
        "training finished before the kill: the test proves nothing (make the fault run longer)"
    )
    epochs_done_at_kill = _finished_epochs(metadata)
    assert 1 <= epochs_done_at_kill < EPOCHS

    cluster.start_worker("training")
    final = cluster.wait_run(run_id, timeout=480)
    assert final["state"] == "success", cluster.states(run_id)

    train = cluster.task_instance(run_id, "model_chain.train", 0)
    assert train["state"] == "success" and train["try_number"] == 2, train
    first_try = [t for t in cluster.tries(run_id, "model_chain.train", 0) if t["try_number"] == 1]
    assert first_try and first_try[0]["state"] in ("failed", "up_for_retry"), first_try
    assert train["hostname"] == WORKERS["training"][1], train
    for task in ("model_chain.evaluate", "model_chain.gradcam", "promote", "report"):
        ti = cluster.task_instance(run_id, task, 0 if task.startswith("model_chain.") else -1)
        assert (ti["state"], ti["hostname"]) == ("success", WORKERS["default"][1]), ti

    record = read_json(model_dir / "training.json")
    assert record["resumed_from_epoch"] >= epochs_done_at_kill, record["resumed_from_epoch"]
    assert record["epochs_run"] == EPOCHS
    assert pd.read_csv(model_dir / "history.csv")["epoch"].tolist() == list(range(EPOCHS)), (
        "each epoch exactly once: none lost, none repeated"
    )
    assert (model_dir / "model.keras").is_file()
    leftovers = [p for p in model_dir.rglob("*") if p.is_file() and (".tmp" in p.name or "backup" in p.parts)]
    assert not leftovers, leftovers
    summary = read_json(cluster.run_dir(run_id) / "summary.json")
    assert (summary["planned"], summary["succeeded"], summary["failed"]) == (1, 1, 0), summary
    contract = read_json(model_dir / "model.json")
    assert contract["model_sha256"] == hashlib.sha256((model_dir / "model.keras").read_bytes()).hexdigest()
    decision = read_json(cluster.run_dir(run_id) / "promotion.json")["conditions"][CONDITION]
    assert decision["decision"] in ("promoted", "kept champion", "no champion"), decision
    assert decision["candidate"], "the resumed model was a candidate: it was not lost"
