"""Shared fixtures: tiny synthetic datasets and a config that trains in seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from medcore.layout import RunLayout

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("MEDCORE_REAL_DATA", ROOT.parent / "shared" / "datasets"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No 30 s TensorFlow probe in a test's night plan (tests of the planner give it their figures); children inherit it.
os.environ.setdefault("MEDCORE_PROBE", "0")

TINY_PROFILES = """
profiles:
  standard: {image_size: 32, epochs: 1, batch_size: 16, execution: eager, max_images_per_split: 40}
  intensive: {image_size: 32, epochs: 1, batch_size: 16, execution: eager, max_images_per_split: 40}
gradcam: {samples: 1, deletion_random_maps: 2}
evaluation: {small_sets: test_split}   # every tiny test split is small: cross-validation has its own test
"""


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The five synthetic datasets, small (shared by tests that only read them)."""
    from medcore.data.synthetic import write_demo_data

    root = tmp_path_factory.mktemp("demo-data")
    write_demo_data(root, per_class=24, size=32, seed=3)
    return root


@pytest.fixture()
def tiny_config(tmp_path, demo_data, monkeypatch) -> Path:
    """A config extending the real conditions.yaml with 32 px, one-epoch profiles and private runs."""
    monkeypatch.delenv("MEDCORE_DATA_ROOT", raising=False)
    monkeypatch.delenv("MEDCORE_RUNS_ROOT", raising=False)
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"extends: {ROOT / 'conditions.yaml'}\ndata_root: {demo_data}\nruns_root: {tmp_path / 'runs'}\n"
        + textwrap.dedent(TINY_PROFILES)
    )
    return path


@dataclass(frozen=True)
class NightOne:
    """One finished tiny `medcore run` shared by the tests that read a whole run (see `night_one`)."""

    root: Path  # data/, later/, runs/, registry/ and the two configs, all inside
    config: Path
    run: RunLayout
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def night_one(tmp_path_factory, demo_data) -> NightOne:
    """`medcore run` of knee_osteoporosis/standard (32 px, 2 epochs) on four fifths of its DICOMs, trained once
    per test session: the `medcore run` end-to-end test reads its artefacts, the two-nights test copies it and
    runs the second night on the grown set. The fifth held back is in `later/`. Promotion gates are off, so the
    first night is promoted. Tests that use it share the xdist group "night_one" (one worker trains it)."""
    root = tmp_path_factory.mktemp("night-one")
    data = root / "data"
    shutil.copytree(demo_data, data)
    for folder in sorted(p for p in (data / "knee_osteoporosis").iterdir() if p.is_dir()):
        for image in sorted(folder.iterdir())[::5]:  # a fifth of each class arrives on night 2
            (root / "later" / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.move(image, root / "later" / folder.name / image.name)
    tiny = root / "tiny.yaml"
    tiny.write_text(
        f"extends: {ROOT / 'conditions.yaml'}\ndata_root: {data}\nruns_root: {root / 'runs'}\n"
        + textwrap.dedent(TINY_PROFILES)
    )
    config = root / "nights.yaml"
    config.write_text(
        f"extends: {tiny}\n"
        "registry: {gates: {roc_auc_low: null, recall: null, specificity: null}, min_tier: null}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCORE_")}
    args = ["run", "--config", str(config), "--condition", "knee_osteoporosis", "--profile", "standard"]
    done = subprocess.run(
        [sys.executable, "-m", "medcore.cli", *args, "--epochs", "2", "--run-id", "night1"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return NightOne(root, config, RunLayout(root / "runs", "night1"), done.stdout, done.stderr)


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory) -> Path:
    """An embedded Airflow's SQLite database after `airflow db migrate`, run once per test worker: each test that
    starts Airflow copies it into its own AIRFLOW_HOME (`airflow_home_from`) instead of migrating again."""
    home = tmp_path_factory.mktemp("airflow-migrated")
    done = subprocess.run(
        [str(ROOT / "bin" / "airflow-local"), "airflow", "db", "migrate"],
        env={**os.environ, "AIRFLOW_HOME": str(home)}, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return home / "airflow.db"


def airflow_home_from(db: Path, home: Path) -> Path:
    """`home` as a new AIRFLOW_HOME holding a copy of the migrated database `db`."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(db, home / "airflow.db")
    return home


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _fuzz_outcome() -> tuple[int, float, str] | None:
    import resource

    from tests.fuzzing import CASES

    if not CASES:
        return None
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return sum(CASES.values()), peak_mib, ", ".join(f"{name} {n}" for name, n in sorted(CASES.items()))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Under `make fuzz`: fail the run if it finished fewer cases than asked or its memory was not bounded."""
    outcome = _fuzz_outcome()
    minimum = int(os.environ.get("MEDCORE_FUZZ_MIN_CASES", "0"))
    limit = float(os.environ.get("MEDCORE_FUZZ_MAX_MIB", "inf"))
    if outcome and (outcome[0] < minimum or outcome[1] > limit) and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After fuzz tests ran: how many generated cases each target finished, and the peak memory of the run."""
    outcome = _fuzz_outcome()
    if outcome:
        total, peak_mib, targets = outcome
        terminalreporter.write_line(
            f"fuzz: {total} generated cases finished ({targets}); peak memory {peak_mib:.0f} MiB"
        )
