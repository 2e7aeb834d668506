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


def test_make_demo_data_gives_four_conditions_enough_test_patients_for_a_tier(tmp_path, monkeypatch):
    """`medcore demo-data`'s defaults under configs/demo.yaml: every condition but knee_osteoporosis has at least
    evaluation.min_per_class val and test patients of each class (promotion reads a tier on val, the report on
    test, so a champion is possible); knee_osteoporosis,
    the demo's deliberate problem, has fewer. At the demo's 128 px: made splits keep near-duplicates together,
    and at 32 px more phantoms count as near-duplicates, so the splits differ."""
    from medcore.cli import build_parser

    args = build_parser().parse_args(["demo-data", str(tmp_path)])
    write_demo_data(
        tmp_path, per_class=args.per_class, size=args.size, seed=args.seed, dicom_per_class=args.dicom_per_class
    )
    monkeypatch.setenv("MEDCORE_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("MEDCORE_REGISTRY_ROOT", str(tmp_path / "registry"))
    config = load_config(ROOT / "configs" / "demo.yaml")
    enough = {}
    for condition in config.conditions.values():
        profile = config.profiles["standard"].for_condition(condition)
        result = validate_condition(config, condition, profile)
        assert result.ok, result.summary()
        judged = result.manifest[result.manifest["split"].isin(["val", "test"])]
        patients = judged.groupby(["split", "label"])["group"].nunique()
        enough[condition.name] = len(patients) == 4 and patients.min() >= config.evaluation.min_per_class
    assert enough == {name: name != "knee_osteoporosis" for name in config.conditions}


def test_every_demo_model_trains_at_most_two_epochs_at_128_px():
    """A per-condition epoch count in conditions.yaml (knee_osteoarthritis' 15) must not leak into the demo."""
    config = load_config(ROOT / "configs" / "demo.yaml")
    trained = {
        (c.name, p.name): (p.for_condition(c).epochs, p.for_condition(c).image_size)
        for c in config.conditions.values()
        for p in config.profiles.values()
    }
    assert len(trained) == 10 and all(epochs <= 2 and size == 128 for epochs, size in trained.values()), trained
