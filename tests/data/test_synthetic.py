"""The demo data must validate cleanly in every form, at the sizes `make demo` and the tests use."""

from __future__ import annotations

import pytest

from medcore.config import load_config
from medcore.data.synthetic import write_demo_data
from medcore.data.validation import validate_condition
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


def _demo_cli(capsys, *argv: str) -> tuple[int, list[str]]:
    from medcore.cli import main

    code = main(["demo-data", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


def test_demo_data_never_overwrites_a_folder_it_did_not_write(tmp_path, capsys):
    """A folder holding anything but demo-data's own earlier output is refused in one line and left as it was;
    its own output (marked) is rewritten; a file given as DIR is one line, not NotADirectoryError (issue 39)."""
    real = tmp_path / "real"
    (real / "cardiomegaly").mkdir(parents=True)
    (real / "cardiomegaly" / "labels.csv").write_text("image,cardiomegaly\nreal.png,1\n")
    code, err = _demo_cli(capsys, str(real), "--per-class", "8", "--size", "32")
    assert code == 2 and len(err) == 1 and "not written by medcore demo-data" in err[0], err
    assert (real / "cardiomegaly" / "labels.csv").read_text() == "image,cardiomegaly\nreal.png,1\n"
    assert sorted(p.name for p in real.rglob("*")) == ["cardiomegaly", "labels.csv"]

    file = tmp_path / "file"
    file.write_text("x")
    code, err = _demo_cli(capsys, str(file))
    assert code == 2 and len(err) == 1 and "not a folder" in err[0], err

    ours = tmp_path / "ours"
    assert _demo_cli(capsys, str(ours), "--per-class", "8", "--size", "32")[0] == 0
    assert _demo_cli(capsys, str(ours), "--per-class", "8", "--size", "32")[0] == 0, "its own output is rewritten"
    (ours / "notes.txt").write_text("mine")
    code, err = _demo_cli(capsys, str(ours), "--per-class", "8", "--size", "32")
    assert code == 2 and "notes.txt" in err[0], err
    assert not list(ours.rglob("*.tmp"))


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--per-class", "0"),
        ("--per-class", "100000000"),
        ("--size", "7"),
        ("--size", "1000000"),
        ("--dicom-per-class", "-1"),
        ("--dicom-per-class", "1000000000"),
    ],
)
def test_demo_data_numbers_are_bounded(tmp_path, capsys, flag, value):
    """--per-class, --dicom-per-class and --size out of range: one line naming the flag and its range, nothing
    written (--dicom-per-class took any number: 1000000000 was a billion films a class)."""
    code, err = _demo_cli(capsys, str(tmp_path / "d"), flag, value)
    assert code == 2 and len(err) == 1 and flag in err[0] and "between" in err[0], err
    assert not (tmp_path / "d").exists()


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
