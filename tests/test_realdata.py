"""The real public sets validate with their known quirks (skipped where ../shared/datasets is absent)."""

from __future__ import annotations

import pytest

from medcore.config import load_config
from medcore.validation import validate_condition
from tests.conftest import REAL_DATA, ROOT

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (REAL_DATA / "README.md").exists(),
                       reason=f"real datasets not found at {REAL_DATA} (set MEDCORE_REAL_DATA to run these)"),
]


@pytest.fixture(scope="module")
def config():
    import os

    os.environ["MEDCORE_DATA_ROOT"] = str(REAL_DATA)
    try:
        return load_config(ROOT / "conditions.yaml")
    finally:
        del os.environ["MEDCORE_DATA_ROOT"]


@pytest.mark.parametrize("name", ["pneumonia", "cardiomegaly", "knee_osteoarthritis", "knee_osteoporosis",
                                  "limb_abnormalities"])
def test_real_set_is_trainable(config, name):
    """Each real set validates with both classes in every split and a fingerprint."""
    result = validate_condition(config, config.conditions[name])
    assert result.ok, result.summary()
    for split in ("train", "val", "test"):
        assert result.counts[split]["positive"] > 0 and result.counts[split]["negative"] > 0
    codes = {f.code for f in result.findings}
    if name == "cardiomegaly":
        assert "label_float_coded" in codes
    if name == "knee_osteoporosis":
        assert "label_excluded" in codes  # osteopenia
    if name == "pneumonia":
        # Kermany has no val split: one is carved from train, whole patients only. (Its own
        # train/test split shares 170 patient ids; that is the source's, not ours.)
        manifest = result.manifest
        val = set(manifest.loc[manifest["split"] == "val", "group"])
        train = set(manifest.loc[manifest["split"] == "train", "group"])
        assert val and not val & train
