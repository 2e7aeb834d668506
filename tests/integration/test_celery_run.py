"""The production path for real: the DAG on the CeleryExecutor, PostgreSQL and Redis, triggered through REST.

Then idempotent reruns: clearing a finished run's tasks writes to the same run folder, and nothing is
duplicated, lost or left half-written.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pandas as pd

from medcore.jsonio import read_json
from tests.integration.conftest import HAPPY_CONDITIONS

CHAIN_TASKS = ("validate", "train", "evaluate", "gradcam")


def _files(folder: Path) -> dict[str, str]:
    """Every file under the run folder, relative path -> sha256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _leftovers(folder: Path) -> list[str]:
    """Temporary or backup files a finished run must not contain."""
    return [
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file()
        and (".tmp" in p.name or p.name.endswith((".bkp", ".partial")) or "backup" in p.relative_to(folder).parts)
    ]


def test_dag_runs_on_celery_workers(cluster, happy_run):
    """Triggered through REST API v2, every task runs on the Celery worker and the report is written."""
    run_id, final = happy_run
    states = cluster.states(run_id)
    assert final["state"] == "success", states
    assert all(s.startswith("success") for s in states.values()), states

    tis = cluster.task_instances(run_id)
    chains = [ti for ti in tis if ti["task_id"].startswith("model_chain.")]
    assert len(chains) == len(CHAIN_TASKS) * len(HAPPY_CONDITIONS), states
    trains = [ti for ti in tis if ti["task_id"] == "model_chain.train"]
    assert {(ti["pool"], ti["pool_slots"], ti["queue"]) for ti in trains} == {("training", 1, "training")}
    assert cluster.api("GET", "/api/v2/pools/training").json()["slots"] == 2
    assert {ti["queue"] for ti in tis if ti["task_id"] != "model_chain.train"} == {"default"}
    assert all(ti["hostname"] for ti in tis), "every task instance records the worker host that ran it"

    # Every task went through Celery: the result backend (in this run's PostgreSQL database) holds one
    # successful Celery task per task instance. The last one may still be recording its result.
    deadline = time.monotonic() + 30
    while True:
        celery_states = dict(cluster.query("SELECT status, count(*) FROM celery_taskmeta GROUP BY status"))
        if celery_states.get("SUCCESS", 0) >= len(tis) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert celery_states.get("SUCCESS", 0) >= len(tis), (celery_states, len(tis))

    run_dir = cluster.run_dir(run_id)
    summary = read_json(run_dir / "summary.json")
    assert (summary["planned"], summary["succeeded"], summary["failed"]) == (2, 2, 0), summary
    report = (run_dir / "report.md").read_text()
    assert Path(summary["report"]).resolve() == (run_dir / "report.md").resolve()
    for condition in HAPPY_CONDITIONS:
        assert condition in report, f"the report does not mention {condition}"
        model_dir = run_dir / condition / "standard"
        for name in (
            "validation.json",
            "split.csv",
            "model.keras",
            "model.json",
            "training.json",
            "history.csv",
            "metrics.json",
            "predictions.csv",
            "gradcam.json",
        ):
            assert (model_dir / name).is_file(), f"{condition}: {name} missing"
        training = read_json(model_dir / "training.json")
        # One `training` pool slot per task -> one TensorFlow thread, so two fits share two cores.
        assert training["threads"]["intra_op"] == 1, training["threads"]
        assert training["resumed_from_epoch"] == 0 and training["epochs_run"] == 1
    assert not _leftovers(run_dir), _leftovers(run_dir)


def test_a_model_trained_on_one_worker_is_evaluated_explained_promoted_and_reported_by_the_other(cluster, happy_run):
    """Two workers standing for two machines: the `training` one fits, the `default` one does everything else
    with the model it finds in the shared runs folder, and puts it into the shared registry."""
    from tests.integration.cluster import WORKERS

    run_id, final = happy_run
    assert final["state"] == "success", cluster.states(run_id)
    training_host, default_host = WORKERS["training"][1], WORKERS["default"][1]
    hosts: dict[str, set[str]] = {}
    for ti in cluster.task_instances(run_id):
        hosts.setdefault(ti["task_id"], set()).add(ti["hostname"])
    assert hosts.pop("model_chain.train") == {training_host}, "every fit ran on the training worker"
    for task in ("model_chain.evaluate", "model_chain.gradcam", "promote", "report"):
        assert hosts[task] == {default_host}, (task, hosts[task])
    assert set().union(*hosts.values()) == {default_host}, hosts

    run_dir = cluster.run_dir(run_id)
    report = (run_dir / "report.md").read_text()
    for condition in HAPPY_CONDITIONS:
        model = run_dir / condition / "standard" / "model.keras"
        contract = read_json(model.with_name("model.json"))
        assert contract["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
        assert contract["threshold"] is not None, "the other worker evaluated the model the first one trained"
        assert read_json(run_dir / condition / "standard" / "gradcam.json")["overlays"]
        record = read_json(cluster.registry_root / f"{condition}.json")
        champion = record["champion"]
        assert champion["run_id"] == run_id and champion["model_sha256"] == contract["model_sha256"], champion
        assert Path(champion["model_path"]).is_file() and Path(champion["model_path"]).is_relative_to(
            cluster.registry_root
        ), "promoted into the shared registry, a copy of the trained bytes"
        assert f"| {condition} | **promoted** |" in report, "the report names the new champion"


def test_cleared_tasks_rerun_into_the_same_place(cluster, happy_run):
    """Clearing train (and all downstream) of a finished run reruns it in place: same files, nothing doubled."""
    run_id, final = happy_run
    assert final["state"] == "success"
    run_dir = cluster.run_dir(run_id)
    runs_before = sorted(p.name for p in cluster.runs_root.iterdir())
    before = _files(run_dir)
    registry_before = sorted(_files(cluster.registry_root))
    started = read_json(run_dir / "run.json")["started"]
    saved = {c: (run_dir / c / "standard" / "model.keras").stat().st_mtime_ns for c in HAPPY_CONDITIONS}
    tries_before = {
        ti["map_index"]: ti["try_number"]
        for ti in cluster.task_instances(run_id)
        if ti["task_id"] == "model_chain.train"
    }

    cleared = cluster.clear(run_id, ["model_chain.train"])
    cleared_ids = {ti["task_id"] for ti in cleared}
    assert {"model_chain.train", "model_chain.evaluate", "model_chain.gradcam", "report", "verdict"} <= cleared_ids
    assert "model_chain.validate" not in cleared_ids and "plan" not in cleared_ids

    rerun = cluster.wait_run(run_id, timeout=900)  # shared cores can double the idle ~4 min
    assert rerun["state"] == "success", cluster.states(run_id)
    for ti in cluster.task_instances(run_id):
        if ti["task_id"] == "model_chain.train":
            assert ti["try_number"] == tries_before[ti["map_index"]] + 1, ti

    after = _files(run_dir)
    assert sorted(p.name for p in cluster.runs_root.iterdir()) == runs_before, "a rerun must not make a new folder"
    # The first pass promoted both models, so the rerun's evaluation finds a champion and adds its paired
    # comparison (champion_predictions.csv) and the trend plots; nothing else may appear, nothing may go.
    compared = {
        k for k in set(after) - set(before) if k.endswith("/champion_predictions.csv") or k.startswith("trend/")
    }
    assert sorted(set(after) - compared) == sorted(before), {
        "new": sorted(set(after) - set(before) - compared),
        "gone": sorted(set(before) - set(after)),
    }
    assert not _leftovers(run_dir), _leftovers(run_dir)
    assert read_json(run_dir / "run.json")["started"] == started
    # validate did not run again: its outputs are byte for byte the same.
    for condition in HAPPY_CONDITIONS:
        for name in ("validation.json", "split.csv"):
            key = f"{condition}/standard/{name}"
            assert after[key] == before[key], key
        model_dir = run_dir / condition / "standard"
        assert (model_dir / "model.keras").stat().st_mtime_ns > saved[condition], "train ran again, replacing the model"
        history = pd.read_csv(model_dir / "history.csv")
        assert history["epoch"].tolist() == [0], "the rerun's history replaces the old one, it does not append"
        training = read_json(model_dir / "training.json")
        assert training["epochs_run"] == 1 and training["resumed_from_epoch"] == 0
        predictions = pd.read_csv(model_dir / "predictions.csv")
        split = pd.read_csv(model_dir / "split.csv")
        assert len(predictions) == (split["split"] == "test").sum(), "one prediction per test image"
        overlays = read_json(model_dir / "gradcam.json")["overlays"]
        assert sorted(Path(o["file"]).name for o in overlays) == sorted(
            p.name for p in (model_dir / "gradcam").glob("*_[0-9][0-9].png")
        ), overlays
    summary = read_json(run_dir / "summary.json")
    assert (summary["planned"], summary["succeeded"], summary["failed"]) == (2, 2, 0), summary
    # promote ran again: the champion registry holds the same files (one copy per champion), no more.
    assert sorted(_files(cluster.registry_root)) == registry_before
