"""One orchestrator: the DAG (`airflow dags test`) and `medcore run` write the same artefacts on one tiny config.

Both train pneumonia/standard (32 px, one epoch, the config's fixed seed, one TensorFlow thread each so the
arithmetic is the same) into their own folder (runs and registry), the CLI under the DAG's run id. Then every
file of both folders is compared, by name and, for JSON and CSV, by content after normalising what must differ:

- paths: each side's folder is replaced by `<side>` (the runs root and registry live in it);
- the host name (the run lock and machine records);
- timestamps: strings that are ISO times, and keys naming a moment (`started`, `decided`, `time`, `*_at`, ...);
- durations, speeds and memory: keys naming seconds, throughput, an ETA or memory, which depend on the machine's
  load and on the process (an Airflow task process holds more than `medcore run`'s);
- `model_sha256`: the hash of model.keras, a zip that records when it was saved (the weights are compared
  through the metrics and predictions they give);
- floats: to 9 significant digits (the same sums, printed by two processes);
- run.json's `params` without empty (null) fields: the trigger form records all six of its fields, `medcore run`
  the ones it has flags for (it has none for the SMTP connection).

Markdown (report.md, model cards) is compared by its headings: its prose holds times and durations. Other files
(models, images) are compared by name. Hidden files are left out: `medcore run` holds `.lock`, which Airflow needs
not (it runs one DAG run at a time).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from medcore.jsonio import read_json
from tests.conftest import ROOT, TINY_PROFILES, airflow_home_from
from tests.test_end_to_end import _airflow

pytestmark = pytest.mark.slow

VOLATILE = re.compile(
    r"(^|_)(started|finished|decided|time|timestamp|created|updated|at|since|seconds|wall|duration|elapsed|eta|"
    r"took|speed|throughput|images_per_second|img_per_s|memory|pid|host|hostname)($|_)|^model_sha256$"
)
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:?\d{2}|Z)?")


def _side(tmp_path: Path, name: str, demo_data: Path) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "tiny.yaml").write_text(
        f"extends: {ROOT / 'conditions.yaml'}\ndata_root: {demo_data}\nruns_root: {folder / 'runs'}\n"
        + textwrap.dedent(TINY_PROFILES)
    )
    return folder


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCORE_")}
    return {**env, "MEDCORE_PROBE": "0", "MEDCORE_THREADS": "1", "MEDCORE_INTER_THREADS": "1",
            "MEDCORE_CONFIG": str(folder / "tiny.yaml"), "AIRFLOW_HOME": str(folder.parent / "airflow")}  # fmt: skip


def _normal(value, side: Path):
    """`value` (parsed JSON) without what differs between two runs of the same night (see the module docstring)."""
    if isinstance(value, dict):
        kept = {k: v for k, v in value.items() if not VOLATILE.search(str(k).lower())}
        if isinstance(kept.get("params"), dict):
            kept["params"] = {k: v for k, v in kept["params"].items() if v is not None}
        return {k: _normal(v, side) for k, v in kept.items()}
    if isinstance(value, list):
        return [_normal(v, side) for v in value]
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, str):
        return _text(value, side)
    return value


def _text(text: str, side: Path) -> str:
    for folder in {str(side.resolve()), str(side)}:
        text = text.replace(folder, "<side>")
    return ISO_TIME.sub("<time>", text.replace(socket.gethostname(), "<host>"))


def _files(side: Path) -> dict[str, Path]:
    """Every artefact the run wrote in its folder (runs and registry), by its path inside it; hidden files aside."""
    return {
        p.relative_to(side).as_posix(): p
        for p in sorted(side.rglob("*"))
        if p.is_file() and p.name != "tiny.yaml" and not any(part.startswith(".") for part in p.relative_to(side).parts)
    }


def _content(path: Path, side: Path):
    """What is compared of one file: normalised JSON, CSV rows, Markdown headings, else nothing (its name)."""
    if path.suffix == ".json":
        return _normal(read_json(path), side)
    if path.suffix == ".csv":
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        table = table[[c for c in table.columns if not VOLATILE.search(c.lower())]]
        return _normal(json.loads(table.to_json(orient="records")), side)
    if path.suffix == ".md":
        return [line for line in path.read_text().splitlines() if line.startswith("#")]
    return None


def test_dag_and_medcore_run_write_the_same_artefacts(tmp_path, demo_data, migrated_airflow_db):
    """The DAG's tasks and `medcore run` call the same steps: same file names, same JSON and CSV, same sections."""
    dag, cli = _side(tmp_path, "dag", demo_data), _side(tmp_path, "cli", demo_data)
    airflow_home_from(migrated_airflow_db, Path(_env(dag)["AIRFLOW_HOME"]))
    conf = {"conditions": ["pneumonia"], "profiles": ["standard"], "epochs": 1}
    done = _airflow(["airflow", "dags", "test", "medical_training", "-c", json.dumps(conf)], _env(dag))
    assert "DagRun Finished" in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]
    [run_json] = (dag / "runs").glob("*/run.json")
    run_id = read_json(run_json)["run_id"]

    args = ["run", "--condition", "pneumonia", "--profile", "standard", "--epochs", "1", "--run-id", run_id]
    ran = subprocess.run(
        [sys.executable, "-m", "medcore.cli", *args, "--config", str(cli / "tiny.yaml")],
        capture_output=True, text=True, timeout=900, env=_env(cli), cwd=ROOT,
    )  # fmt: skip
    assert ran.returncode in (0, 1), ran.stderr[-3000:]
    assert "e-mail skipped: no recipients" in ran.stdout, "medcore run notifies as the DAG does, or says why not"

    theirs, ours = _files(dag), _files(cli)
    assert sorted(theirs) == sorted(ours)
    assert {"runs/" + run_json.parent.name + "/" + n for n in ("notify.json", "promotion.json", "summary.json")} <= set(
        ours
    )
    differ = [name for name in theirs if _content(theirs[name], dag) != _content(ours[name], cli)]
    assert not differ, differ
