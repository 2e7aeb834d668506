"""The demo data must validate cleanly in every form, at the sizes `make demo` and the tests use."""

from __future__ import annotations

import pytest

from medcore.config import load_config
from medcore.synthetic import write_demo_data
from medcore.validation import validate_condition
from tests.conftest import ROOT


@pytest.mark.parametrize("per_class", [24, 60])
def test_demo_sets_are_trainable_without_errors(tmp_path, monkeypatch, per_class):
    """No demo set trips an error finding (e.g. a patient straddling two splits) at this size."""
    write_demo_data(tmp_path, per_class=per_class, size=32)
    monkeypatch.setenv("MEDCORE_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("MEDCORE_REGISTRY_ROOT", str(tmp_path / "registry"))  # the DICOM set's group key goes here
    config = load_config(ROOT / "configs" / "demo.yaml")
    for condition in config.conditions.values():
        result = validate_condition(config, condition)
        assert result.ok, result.summary()
