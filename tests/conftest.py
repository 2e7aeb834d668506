"""Shared fixtures: tiny synthetic datasets and a config that trains in seconds."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

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
    from medcore.synthetic import write_demo_data

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
