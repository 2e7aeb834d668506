"""End to end on tiny synthetic images: the real DAG under `airflow dags test`, and `medcore run`.

These train real DenseNet121 models (32 px, one epoch), so they take about a minute each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medcore.jsonio import read_json
from tests.conftest import ROOT, airflow_home_from

pytestmark = pytest.mark.slow


def _break_cardiomegaly(data: Path) -> str:
    """Rename the image column so the manifest no longer matches the config; return the expected error."""
    manifest = data / "cardiomegaly" / "labels.csv"
    table = pd.read_csv(manifest, dtype=str).rename(columns={"image": "filename"})
    table.to_csv(manifest, index=False)
    return "column 'image' not found"


def _airflow(args: list[str], env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "bin" / "airflow-local"), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_dag_run_with_one_broken_dataset(tmp_path, demo_data, tiny_config, migrated_airflow_db):
    """The healthy condition trains; the broken one fails at validate; the report says so; the run fails."""
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    expected_error = _break_cardiomegaly(data)
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home_from(migrated_airflow_db, tmp_path / "airflow")),
        "MEDCORE_CONFIG": str(tiny_config),
        "MEDCORE_DATA_ROOT": str(data),
        "MEDCORE_RUNS_ROOT": str(runs),
    }

    conf = {"conditions": ["pneumonia", "cardiomegaly"], "profiles": ["standard"], "epochs": 1}
    # Through the LocalExecutor and an API server, as `make demo` runs (bin/airflow-dags-test).
    done = subprocess.run(
        [str(ROOT / "bin" / "airflow-dags-test"), "medical_training", "-c", json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode != 0, "a run with a failed model must end failed"
    assert "DagRun Finished" in log and "state=failed" in log
    assert "executor=LocalExecutor" in log, "the tasks ran through the executor, not in the dags test process"

    [run_dir] = [p for p in runs.iterdir() if p.is_dir()]
    summary = read_json(run_dir / "summary.json")
    assert (summary["planned"], summary["succeeded"], summary["failed"]) == (2, 1, 1)
    [failure] = summary["failures"]
    assert (failure["condition"], failure["stage"]) == ("cardiomegaly", "validate")
    assert expected_error in failure["error"]

    report = (run_dir / "report.md").read_text()
    assert "| pneumonia | standard | ✅ succeeded |" in report
    assert "| cardiomegaly | standard | ❌ failed at validate |" in report
    assert expected_error in report

    good = run_dir / "pneumonia" / "standard"
    metrics = read_json(good / "metrics.json")
    assert metrics["evaluated_split"] == "test" and metrics["threshold_split"] == "val"
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["n"] > 0
    overlays = read_json(good / "gradcam.json")["overlays"]
    assert overlays and all(Path(o["file"]).stat().st_size > 0 for o in overlays)
    assert all(Path(o["file"]).name in report for o in overlays)
    assert not (run_dir / "cardiomegaly" / "standard" / "model.keras").exists()

    # promote ran after the chains and before the report; notify after it (no recipients: skipped).
    decisions = read_json(run_dir / "promotion.json")["conditions"]
    assert decisions["cardiomegaly"]["decision"] == "no champion"
    assert decisions["pneumonia"]["decision"] in ("promoted", "no champion")
    assert (
        f"| pneumonia | {'**promoted**' if decisions['pneumonia']['decision'] == 'promoted' else 'no champion'} |"
        in report
    )
    assert read_json(run_dir / "notify.json")["status"] == "skipped"
    assert "1 of 2 models failed: cardiomegaly/standard (validate)" in log


@pytest.mark.xdist_group("night_one")
def test_medcore_run_writes_every_artefact(tmp_path, night_one):
    """`medcore run` uses the same stages: model, contract, metrics, predictions, overlays, report.

    The run is the session's shared one (`night_one` in conftest: knee_osteoporosis/standard, 2 epochs)."""
    done = night_one
    assert "1/1 models succeeded" in done.stdout
    logged = [line for line in done.stderr.splitlines() if " medcore." in line or " tensorflow:" in line]
    assert any("INFO medcore.pipeline: gradcam: knee_osteoporosis/standard" in line for line in logged)
    assert any("img/s, ETA" in line for line in logged), "a progress line per epoch, with speed and time left"
    assert len(logged) == len(set(logged)), "a log line was printed twice"
    run_dir = night_one.run.root
    model_dir = night_one.run.model("knee_osteoporosis", "standard").root
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
        assert (model_dir / name).is_file(), name
    assert list((model_dir / "gradcam").glob("*.png"))
    split = pd.read_csv(model_dir / "split.csv")
    predictions = pd.read_csv(model_dir / "predictions.csv")
    assert set(predictions["relpath"]) == set(split.loc[split["split"] == "test", "relpath"])
    training = read_json(model_dir / "training.json")
    assert training["epochs_run"] == 2 and training["dataset_fingerprint"]
    assert not list(model_dir.glob(".*tmp*")), "no temporary files may be left behind"

    import keras

    model = keras.models.load_model(model_dir / "model.keras", safe_mode=True)
    assert model.get_layer("relu").output.shape[-1] == 1024

    # The report's Grad-CAM snippet names the real layer and model, and runs as printed.
    report = (run_dir / "report.md").read_text()
    snippet = report.split("## Grad-CAM on a new image", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'layer="relu"' in snippet and (str(model_dir / "model.keras") in snippet or "registry" in snippet)
    image, out = predictions["path"].iloc[0], tmp_path / "overlay.png"
    exec(snippet.replace('"xray.png"', repr(image)).replace('"xray_gradcam.png"', repr(str(out))), {})
    assert out.stat().st_size > 0
    assert read_json(run_dir / "promotion.json")["conditions"]["knee_osteoporosis"]["decision"]

    # Evaluation: intervals, plots, and the val-chosen threshold recorded in the model contract.
    metrics = read_json(model_dir / "metrics.json")
    assert metrics["bootstrap"]["resamples"] >= 1000 and metrics["quality"]["tier"]
    assert read_json(model_dir / "model.json")["threshold"] == metrics["threshold"]
    assert all(
        (model_dir / "plots" / f"{name}.png").stat().st_size > 0 for name in ("roc", "pr", "calibration", "confusion")
    )
    # Grad-CAM: a contact sheet and the deletion AUC pair with its verdict.
    gradcam = read_json(model_dir / "gradcam.json")
    assert Path(gradcam["contact_sheet"]).is_file()
    faith = gradcam["faithfulness"]
    assert faith["score"] == "logit" and 0 <= faith["p_value"] <= 1
    assert faith["better_than_random"] == (faith["p_value"] < faith["alpha"] and faith["mean_area_difference"] < 0)
    # knee osteoporosis keeps its aspect (conditions.yaml): the contract says so, Grad-CAM masks the padding
    assert read_json(model_dir / "model.json")["resize"] == "pad" and gradcam["padding_masked"]
    assert read_json(model_dir / "model.json")["temperature"] == metrics["temperature"] > 0

    # `medcore predict` on the test images reproduces the evaluation's scores and decisions.
    out = tmp_path / "preds.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "medcore.cli",
            "predict",
            "--model",
            str(model_dir / "model.keras"),
            "--images",
            str(model_dir / "predictions.csv"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scored = pd.read_csv(out)
    assert list(scored["path"]) == list(predictions["path"])
    assert (scored["probability"] - predictions["probability"]).abs().max() < 1e-5
    assert list(scored["predicted"]) == list(predictions["predicted"])


def test_cli_user_mistakes_are_one_line(tmp_path):
    """A bad config or unknown condition exits 2 with one line on stderr and no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("conditions: {x: {dataset: x, layout: tiles, positive: [a], negative: [b]}}\nprofiles: {s: {}}\n")
    for args in (
        ["run", "--config", str(bad)],
        ["run", "--config", str(ROOT / "conditions.yaml"), "--condition", "flu"],
    ):
        done = subprocess.run([sys.executable, "-m", "medcore.cli", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("medcore: error:"), done.stderr
        assert "Traceback" not in done.stderr


def test_a_hung_training_task_times_out_and_the_run_still_reports(tmp_path, tiny_config, migrated_airflow_db):
    """Real Airflow (`dags test`): training that runs past its execution_timeout (here 45.6 s, from the config's
    `tasks` section) is ended, fails, and promote and the report still run. Retries are left to the integration
    suite: `dags test` runs a retry in the same process, where a Keras resume is not what a real worker does."""
    config = tmp_path / "hung.yaml"
    config.write_text(
        f"extends: {tiny_config}\ntasks: {{retries: 0, train_minutes_fixed: 0.75, train_minutes_per_epoch: 0.01}}\n"
        "profiles: {standard: {patience: 1000}}\n"
    )
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home_from(migrated_airflow_db, tmp_path / "airflow")),
        "MEDCORE_CONFIG": str(config),
        "MEDCORE_RUNS_ROOT": str(runs),
        "MEDCORE_THREADS": "0",
        "MEDCORE_RETRY_DELAY_SECONDS": "1",
    }
    # The timeout must fall inside `fit`, not inside `import tensorflow`: `dags test` runs every try in one
    # process, and an import cut short leaves TensorFlow half-registered for the retry (a real executor starts
    # each try afresh). 1000 epochs of a 32 px model, never stopped early, outlast 45 s; the import does not.
    conf = {"conditions": ["knee_osteoporosis"], "profiles": ["standard"], "epochs": 1000}
    done = _airflow(["airflow", "dags", "test", "medical_training", "-c", json.dumps(conf)], env)
    log = done.stdout + done.stderr
    assert done.returncode != 0 and "state=failed" in log, log[-3000:]
    assert "AirflowTaskTimeout" in log, log[-3000:]

    [run_dir] = [p for p in runs.iterdir() if p.is_dir()]
    summary = read_json(run_dir / "summary.json")
    assert (summary["planned"], summary["succeeded"], summary["failed"]) == (1, 0, 1)
    [failure] = summary["failures"]
    assert failure["stage"] == "train" and "Timeout" in failure["error"], failure
    report = (run_dir / "report.md").read_text()
    assert "ran past its execution_timeout" in report
    assert (run_dir / "promotion.json").is_file(), "promote ran after the timed-out chain"
