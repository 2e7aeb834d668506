"""Shared fixtures: tiny synthetic datasets and a config that trains in seconds."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("MEDCORE_REAL_DATA", ROOT.parent / "shared" / "datasets"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    path.write_text(f"extends: {ROOT / 'conditions.yaml'}\ndata_root: {demo_data}\nruns_root: {tmp_path / 'runs'}\n"
                    + textwrap.dedent(TINY_PROFILES))
    return path


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path
