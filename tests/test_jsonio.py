"""The one JSON serializer and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medcore.jsonio import dumps, read_json, to_jsonable, write_json


def test_numpy_scalars_and_arrays_become_plain_json():
    """float32, int64, bool_ and arrays encode as JSON numbers and lists (the seed crashed here)."""
    value = {"auc": np.float32(0.875), "n": np.int64(12), "ok": np.bool_(True), "cm": np.array([[1, 2], [3, 4]])}
    decoded = json.loads(dumps(value))
    assert decoded == {"auc": 0.875, "n": 12, "ok": True, "cm": [[1, 2], [3, 4]]}
    assert type(decoded["n"]) is int


def test_nan_and_infinity_become_null():
    """NaN is not JSON; it is written as null so other readers do not break."""
    assert json.loads(dumps({"a": float("nan"), "b": np.float64("inf"), "c": [np.float32("nan")]})) == {
        "a": None,
        "b": None,
        "c": [None],
    }


def test_paths_tuples_and_nested_dataclasses():
    """Paths become strings and dataclasses become mappings."""
    from dataclasses import dataclass

    @dataclass
    class Record:
        path: Path
        scores: tuple

    assert to_jsonable(Record(Path("/x/y"), (np.float16(0.5), 1))) == {"path": "/x/y", "scores": [0.5, 1]}


def test_unencodable_value_leaves_existing_file_untouched(tmp_path):
    """A failed write never replaces the good file and leaves no temporary file behind."""
    target = tmp_path / "metrics.json"
    write_json(target, {"auc": 0.9})
    with pytest.raises(TypeError):
        write_json(target, {"auc": object()})
    assert read_json(target) == {"auc": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_artefacts_get_the_mode_the_umask_allows(tmp_path, umask, mode):
    """A report written atomically is 0644 under umask 022, as `open` would make it (not mkstemp's 0600)."""
    import os
    import stat

    previous = os.umask(umask)
    try:
        path = write_json(tmp_path / "report.json", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode
