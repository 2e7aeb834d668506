"""Pipeline stages on a real tiny dataset: what a stage leaves behind when it fails."""

from __future__ import annotations

import shutil

import pytest

from medcore import pipeline
from medcore.errors import DataError
from medcore.layout import RunLayout


def test_a_failed_validation_removes_the_split_of_an_earlier_pass(tiny_config, demo_data, tmp_path):
    """Validate passes and writes split.csv; the data breaks; validate again fails and leaves no split to train on."""
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    config = tiny_config.with_name("copy.yaml")
    config.write_text(tiny_config.read_text().replace(f"data_root: {demo_data}", f"data_root: {data}"))
    [job] = pipeline.plan_run(config, "split-test", ["knee_osteoporosis"], ["standard"])
    paths = RunLayout(job["runs_root"], job["run_id"]).model(job["condition"], job["profile"])
    pipeline.validate(job)
    assert paths.split_csv.is_file()
    for folder in (data / "knee_osteoporosis").iterdir():
        if folder.is_dir() and folder.name == "osteoporosis":
            shutil.rmtree(folder)  # one class gone: not trainable any more
    pipeline.clear_config_cache()
    with pytest.raises(DataError):
        pipeline.validate(job)
    assert not paths.split_csv.exists(), "train would have used the previous split"
    assert paths.failure_json.is_file() and paths.validation_json.is_file()
    with pytest.raises(Exception, match="no split manifest"):
        pipeline.train(job)


def test_a_second_run_with_the_same_id_is_refused_while_the_first_holds_the_folder(tiny_config, tmp_path, capsys):
    """The run folder is locked for the life of a run: `medcore run` with a held id is one line, exit 2, and
    writes nothing into the folder (two runs of one id once shared it and overwrote each other's report)."""
    import subprocess
    import sys

    from medcore.cli import main
    from medcore.config import load_config

    layout = RunLayout(load_config(tiny_config).runs_root, "same-id")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from medcore.pipeline import run_lock; from medcore.layout import RunLayout\n"
            f"with run_lock(RunLayout({str(layout.runs_root)!r}, 'same-id')):\n"
            "    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in layout.root.iterdir())
        assert main(["run", "--config", str(tiny_config), "--run-id", "same-id", "--condition", "pneumonia"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "already running" in err[0] and "same-id" in err[0], err
        assert sorted(p.name for p in layout.root.iterdir()) == before
    finally:
        holder.communicate("")
    assert holder.returncode == 0


def test_default_run_ids_are_unique_to_the_sub_second_and_the_host():
    """Two ids made in the same second differ, and each names the host (two machines never share one)."""
    import socket

    from medcore.cli import default_run_id
    from medcore.layout import safe_run_id

    ids = {default_run_id() for _ in range(50)}
    assert len(ids) == 50
    host = socket.gethostname().split(".")[0]
    assert all(safe_run_id(i) == i and host[:20] in i for i in ids)


def test_medcore_runs_one_handler_of_skips_and_errors(caplog):
    """`attempt` is `medcore run`'s Skipped/error handling: a skip is done and logged, an error is one logged line."""
    import logging

    from medcore.errors import Skipped, StageError
    from medcore.pipeline.orchestrator import attempt

    def skip(job):
        raise Skipped("unchanged since the champion")

    def fail(job):
        raise StageError("boom\nsecond line")

    caplog.set_level(logging.INFO, logger="medcore.pipeline")
    assert attempt("pneumonia/standard", skip, {}, at="train") == "skipped"
    assert attempt("pneumonia/standard", fail, {}, at="validate") == "failed"
    assert attempt("promotion", fail, {}) == "failed"
    assert attempt("report", lambda job: job, {}) == "done"
    assert [r.getMessage() for r in caplog.records] == [
        "pneumonia/standard skipped: unchanged since the champion",
        "pneumonia/standard failed at validate: boom second line",
        "promotion failed: boom second line",
    ]
