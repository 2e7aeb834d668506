"""Progress in the terminal: models done, the running model and stage, an estimate, a failure's one line."""

from __future__ import annotations

import io
import sqlite3
import sys
import textwrap

import pytest

from medcore.jsonio import write_json
from medcore.layout import RunLayout
from medcore.progress import eta_text, progress_line, read_progress, running_tasks, watch

JOBS = [{"condition": c, "profile": p} for c in ("pneumonia", "limb") for p in ("standard", "intensive")]


def _run(tmp_path, run_id: str = "manual__2026-12-07T01:00:00+00:00") -> RunLayout:
    run = RunLayout(tmp_path / "runs", run_id)
    write_json(run.run_json, {"run_id": run_id, "jobs": JOBS})
    return run


def _finish(run: RunLayout, condition: str, profile: str, *stages: str) -> None:
    paths = run.model(condition, profile)
    paths.root.mkdir(parents=True, exist_ok=True)
    files = {"validate": paths.split_csv, "train": paths.model, "evaluate": paths.metrics_json}
    files["gradcam"] = paths.gradcam_json
    for stage in stages:
        files[stage].write_text("{}")


def test_models_done_failed_and_the_estimate_come_from_the_run_folder(tmp_path):
    run = _run(tmp_path)
    _finish(run, "pneumonia", "standard", "validate", "train", "evaluate", "gradcam")
    _finish(run, "pneumonia", "intensive", "validate", "train")
    _finish(run, "limb", "standard", "validate")
    write_json(run.model("limb", "standard").failure_json, {"stage": "train", "error": "out of memory"})

    progress = read_progress(run)
    assert [m.finished for m in progress.models][:2] == [
        ("validate", "train", "evaluate", "gradcam"),
        ("validate", "train"),
    ]
    assert progress.finished == 2 and [m.name for m in progress.failed] == ["limb/standard"]
    assert 0.5 < progress.share_done < 0.7  # two whole models, validate + train of a third, nothing of the fourth
    line = progress_line(progress, 120.0)
    assert line.startswith("[2:00] 2/4 models done, 1 failed")
    assert "next pneumonia/intensive evaluate" in line and "left" in line


def test_the_estimate_waits_for_data_then_scales_the_time_so_far():
    assert eta_text(10, 0.01) == "estimating time left"
    assert eta_text(60, 0.5) == "about 60 s left"
    assert eta_text(600, 0.25) == "about 30 min left"


def test_every_model_validated_is_too_little_to_estimate_from(tmp_path):
    """All validates finish in the first seconds; an estimate made from them alone was minutes too long."""
    run = _run(tmp_path)
    for job in JOBS:
        _finish(run, job["condition"], job["profile"], "validate")
    assert progress_line(read_progress(run), 35.0).endswith("estimating time left")
    _finish(run, "pneumonia", "standard", "train")
    assert "min left" in progress_line(read_progress(run), 65.0)


def test_running_tasks_name_the_model_and_stage_from_airflows_database(tmp_path):
    db = tmp_path / "airflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE task_instance (task_id TEXT, map_index INTEGER, run_id TEXT, state TEXT)")
        connection.executemany(
            "INSERT INTO task_instance VALUES (?, ?, ?, ?)",
            [
                ("model_chain.train", 2, "r1", "running"),
                ("model_chain.validate", 3, "r1", "success"),
                ("report", -1, "r1", "running"),
                ("model_chain.train", 0, "other run", "running"),
            ],
        )
    assert running_tasks(db, "r1", JOBS) == ["limb/standard train", "report"]
    assert running_tasks(tmp_path / "missing.db", "r1", JOBS) == []


def test_watch_prints_at_once_names_a_failure_and_where_the_log_is(tmp_path):
    """A command that plans a run, fails one model and exits 1: the first line comes before it ends, then the
    failed model's one line, then why the command failed and the log."""
    run = RunLayout(tmp_path / "runs", "r1")
    script = textwrap.dedent(
        f"""
        import sys, time
        from medcore.jsonio import write_json
        write_json({str(run.run_json)!r}, {{"run_id": "r1", "jobs": {JOBS!r}}})
        write_json({str(run.model("limb", "standard").failure_json)!r}, {{"stage": "validate", "error": "no images"}})
        time.sleep(0.5)
        print("2026-12-07 01:00:00 ERROR medcore.pipeline: limb/standard failed at validate: no images")
        sys.exit(1)
        """
    )
    out, log = io.StringIO(), tmp_path / "logs" / "run.log"
    code = watch([sys.executable, "-c", script], log, tmp_path / "runs", interval=0.2, out=out)
    lines = out.getvalue().splitlines()
    assert code == 1
    assert lines[0].startswith("[0:00] started:") and str(log) in lines[0]
    assert f"✗ limb/standard failed at validate: no images (log: {log})" in lines
    assert (
        lines[-2] == "failed: 2026-12-07 01:00:00 ERROR medcore.pipeline: limb/standard failed at validate: no images"
    )
    assert lines[-1] == f"log: {log}"
    assert "ERROR" in log.read_text()


def test_watch_writes_only_a_log_it_owns(tmp_path):
    """--log over a file someone else wrote, or over a symlink, is refused before the command starts and
    leaves both as they were; over its own earlier log it starts again."""
    from medcore.errors import MedcoreError

    (tmp_path / "precious").write_text("keep\n")
    foreign, link, own = tmp_path / "foreign.log", tmp_path / "link.log", tmp_path / "own.log"
    foreign.write_text("not medcore's\n")
    link.symlink_to(tmp_path / "precious")
    marker = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x'); print('hello')"]
    for path in (foreign, link):
        with pytest.raises(MedcoreError, match=r"not written by this command|is a symlink"):
            watch(command, path, tmp_path / "runs", interval=0.1, out=io.StringIO())
    assert not marker.exists(), "a refused log must stop the command from starting"
    assert foreign.read_text() == "not medcore's\n" and (tmp_path / "precious").read_text() == "keep\n"
    for _ in range(2):
        assert watch(command, own, tmp_path / "runs", interval=0.1, out=io.StringIO()) == 0
    assert own.read_text().splitlines()[1:] == ["hello"]
