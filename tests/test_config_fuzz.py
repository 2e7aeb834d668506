"""Fuzzing the config: any value at any key, and any bytes as the file, end in a config or a one-line error.

Then `medcore validate` runs with each config that loaded, on one small dataset: it exits 0, 1 or 2
with at most one error line, and writes nothing outside its --out folder.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from medcore.config import load_config
from medcore.data.synthetic import phantom
from medcore.errors import ConfigError
from tests.fuzzing import FUZZ, count

BASE = {
    "seed": 7,
    "split": {"val_fraction": 0.2, "test_fraction": 0.2},
    "gradcam": {"layer": "relu", "samples": 2},
    "evaluation": {"bootstrap_resamples": 1000, "confidence": 0.95, "threshold_rule": "youden", "min_per_class": 5},
    "validation": {
        "min_class_fraction": 0.05,
        "near_duplicate_distance": 16,
        "leak_drop_from": "heldout",
        "min_per_class": {"train": 2, "val": 1, "test": 1},
    },
    "registry": {"gates": {"roc_auc": 0.6}, "margin": 0.02, "min_tier": "moderate"},
    "notify": {"conn_id": "smtp_default", "recipients": []},
    "conditions": {
        "c": {
            "dataset": "set",
            "layout": "folders",
            "positive": ["pos"],
            "negative": ["neg"],
            "validation_policy": {"duplicate_within_split": "drop"},
        }
    },
    "profiles": {
        "p": {
            "image_size": 32,
            "epochs": 1,
            "batch_size": 8,
            "learning_rate": 0.001,
            "augmentation": {"rotation": 0.02},
        }
    },
}


def _keys(node: dict, prefix: tuple = ()) -> list[tuple]:
    found = []
    for key, value in node.items():
        found.append(prefix + (key,))
        if isinstance(value, dict):
            found += _keys(value, prefix + (key,))
    return found


KEYS = _keys(BASE)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from([".nan", ".inf", "-.inf", "1e400", "0x10", "~", "yes"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=6), scalars, max_size=3))
edits = st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=3)
new_keys = st.lists(st.tuples(st.just(()), st.text(min_size=1, max_size=8), scalars), max_size=1)  # unknown top keys


def _get(node, key):
    for part in key:
        node = node[part]
    return node


def _apply(edit_list, extra) -> dict:
    config = copy.deepcopy(BASE)
    for key, value in edit_list:
        node = config
        for part in key[:-1]:
            if not isinstance(node.get(part), dict):
                break
            node = node[part]
        else:
            node[key[-1]] = value
    for _, key, value in extra:
        config[key] = value
    return config


def _dataset(root: Path) -> None:
    rng = np.random.default_rng(5)
    for folder, n in (("train/pos", 6), ("train/neg", 6), ("test/pos", 3), ("test/neg", 3)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            (root / folder / f"{i}.png").write_bytes(cv2.imencode(".png", phantom(rng, 32, "pos" in folder))[1])


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(text: str) -> None:
    lines = text.strip().splitlines()
    assert len(lines) <= 1 and (not lines or lines[0].startswith("medcore: ")), lines


def _validate_with(root: Path, config_path: Path) -> None:
    """`medcore validate` with this config: exit 0/1/2, one error line at most, writes only into out/."""
    from medcore.cli import main

    before = _tree(root)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", "--config", str(config_path), "--condition", "c", "--out", str(root / "out")])
    assert code in (0, 1, 2), code
    _one_line(err.getvalue())
    after = _tree(root)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert all(k.startswith("out/") for k in changed), sorted(changed)


@pytest.fixture(autouse=True)
def _no_env_roots(monkeypatch):
    monkeypatch.delenv("MEDCORE_DATA_ROOT", raising=False)
    monkeypatch.delenv("MEDCORE_RUNS_ROOT", raising=False)
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)


@FUZZ
@given(edit_list=edits, extra=new_keys)
def test_any_value_at_any_key_is_a_config_or_one_line_naming_the_file(edit_list, extra):
    """NaN, infinities, huge integers, wrong types and unknown keys are loaded or refused in one line."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _dataset(root / "data" / "set")
        document = {"data_root": str(root / "data"), "runs_root": str(root / "runs"), **_apply(edit_list, extra)}
        path = root / "c.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
        try:
            config = load_config(path)
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message and "c.yaml" in message, message
        else:
            for number in (config.val_fraction, config.test_fraction):
                assert math.isfinite(number) and 0 < number < 1, number
            _validate_with(root, path)
    count("config values")


ODD_FILES = [
    b"\xff\xfe\x00",
    b"- a\n- b\n",
    b"a: [",
    b"&a [*a]",
    b"!!python/object:os.system x",
    b"{" * 200,
    b"a: " + b"[" * 5000,
    b"conditions: 1\n",
    b"\x00",
]


@FUZZ
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace")),
        st.sampled_from(ODD_FILES),
    )
)
def test_any_bytes_as_the_config_file_are_a_one_line_error_or_a_config(content):
    """Random bytes, bad encodings, YAML tags and deep nesting never escape as a traceback."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "c.yaml"
        path.write_bytes(content)
        try:
            load_config(path)
        except ConfigError as exc:
            assert "\n" not in str(exc) and "c.yaml" in str(exc), str(exc)
        _validate_with(root, path)
    count("config bytes")
