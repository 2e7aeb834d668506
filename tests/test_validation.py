"""Validation findings on datasets the tests break on purpose."""

from __future__ import annotations

import pandas as pd

from medcore.config import load_config
from medcore.validation import validate_condition


def _findings(result) -> dict[str, dict]:
    return {f["code"]: f for f in result.to_dict()["findings"]}


def _copy_limb(demo_data, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(demo_data / "limb", root / "limb")
    return root


def _config(tiny_config, monkeypatch, root):
    monkeypatch.setenv("MEDCORE_DATA_ROOT", str(root))
    return load_config(tiny_config)


def test_clean_synthetic_sets_validate(tiny_config):
    """Every demo set is trainable, with a fingerprint and per-split counts."""
    config = load_config(tiny_config)
    for condition in config.conditions.values():
        result = validate_condition(config, condition)
        assert result.ok, result.summary()
        assert len(result.fingerprint) == 16
        assert all(result.counts[s]["positive"] > 0 and result.counts[s]["negative"] > 0 for s in ("train", "val", "test"))
    findings = _findings(validate_condition(config, config.conditions["cardiomegaly"]))
    assert findings["label_float_coded"]["severity"] == "warning"


def test_bad_rows_are_dropped_and_named(tiny_config, demo_data, tmp_path, monkeypatch):
    """Missing, corrupt, blank-label and escaping rows are dropped, counted and named; training can go on."""
    root = _copy_limb(demo_data, tmp_path)
    manifest = root / "limb" / "labels.csv"
    table = pd.read_csv(manifest, dtype=str)
    (root / "limb" / table.loc[0, "image"]).unlink()                       # missing file
    (root / "limb" / table.loc[1, "image"]).write_bytes(b"not an image")   # corrupt file
    (root / "limb" / table.loc[2, "image"]).write_bytes(b"")               # zero bytes
    table.loc[3, "finding"] = ""                                           # blank label
    table.loc[4, "image"] = "../../etc/passwd"                             # escapes the dataset
    table.loc[5, "finding"] = "maybe"                                      # unknown class
    table.to_csv(manifest, index=False)

    result = validate_condition(_config(tiny_config, monkeypatch, root), load_config(tiny_config).conditions["limb_abnormalities"])
    findings = _findings(result)
    assert result.ok, result.summary()
    assert findings["file_missing"]["count"] == 1 and findings["file_missing"]["examples"] == [table.loc[0, "image"]]
    assert findings["image_unreadable"]["count"] == 2
    assert findings["label_missing"]["count"] == 1
    assert findings["path_outside_dataset"]["examples"] == ["../../etc/passwd"]
    assert findings["label_excluded"]["count"] == 1
    assert len(result.manifest) == len(table) - 6


def test_one_class_missing_is_an_error_with_a_reason(tiny_config, demo_data, tmp_path, monkeypatch):
    """A dataset with no negatives cannot be trained on and says so in one line."""
    root = _copy_limb(demo_data, tmp_path)
    manifest = root / "limb" / "labels.csv"
    table = pd.read_csv(manifest, dtype=str)
    table["finding"] = "positive"
    table.to_csv(manifest, index=False)
    result = validate_condition(_config(tiny_config, monkeypatch, root), load_config(tiny_config).conditions["limb_abnormalities"])
    assert not result.ok
    assert "negative images" in result.reason and "\n" not in result.reason


def test_missing_folder_and_bad_manifest_are_errors(tiny_config, tmp_path, monkeypatch):
    """A missing dataset folder or unparsable manifest is an error finding, not an exception."""
    config = _config(tiny_config, monkeypatch, tmp_path)
    result = validate_condition(config, config.conditions["pneumonia"])
    assert not result.ok and "dataset folder not found" in result.reason
    (tmp_path / "limb").mkdir()
    (tmp_path / "limb" / "labels.csv").write_text("image,finding\n")
    result = validate_condition(config, config.conditions["limb_abnormalities"])
    assert not result.ok and "column 'patient_id' not found" in result.reason
