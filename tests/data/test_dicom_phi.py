"""No patient data leaves the reader: a real run on DICOMs full of identifying values, every output byte grepped."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from medcore.data.synthetic import dicom_bytes, phantom
from tests.conftest import write_yaml

pytestmark = pytest.mark.slow  # trains and explains a real model (about a minute on two cores)

# One identity per patient; each value is distinctive enough that finding it anywhere means it leaked.
PEOPLE = [
    {
        "PatientName": f"Zyxwabc{i}^Quorvina",
        "PatientID": f"MRN-{i}-5539174",
        "PatientBirthDate": f"19{40 + i}0315",
        "OtherPatientIDs": f"OTHID-{i}-88123",
        "PatientAddress": f"{i} Quibblewick Lane",
        "StudyDate": f"2019{i % 12 + 1:02d}{i + 1:02d}",
        "SeriesDate": f"2018{i % 12 + 1:02d}{i + 1:02d}",
        "AcquisitionDate": f"2017{i % 12 + 1:02d}{i + 1:02d}",
        "ContentDate": f"2016{i % 12 + 1:02d}{i + 1:02d}",
        "StudyTime": f"13{i:02d}42.123",
        "AcquisitionDateTime": f"2015{i % 12 + 1:02d}{i + 1:02d}133742",
        "AccessionNumber": f"ACCN{i}7781234",
        "InstitutionName": f"Glimmerfen Infirmary {i}",
        "InstitutionAddress": f"Vexmoor Road {i}",
        "ReferringPhysicianName": f"Plonkett{i}^Hester",
        "PerformingPhysicianName": f"Drabwell{i}^Osric",
        "OperatorsName": f"Sneddle{i}^Ivogorth",
        "DeviceSerialNumber": f"SN-QX{i}-771903",
        "StationName": f"XRSTN-Wombly{i}",
        "StudyInstanceUID": f"1.2.826.0.1.3680043.99.4242.{i}",
        "StudyID": f"STUDYQ{i}4471",
    }
    for i in range(16)
]
NAMES = ("PatientName", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName")
SECRETS = sorted(
    {v for person in PEOPLE for k, v in person.items()}
    | {part for person in PEOPLE for k in NAMES for part in person[k].split("^")}
)


def _write_set(root) -> None:
    rng = np.random.default_rng(5)
    for label in ("pos", "neg"):
        (root / label).mkdir(parents=True)
        for i in range(16):
            person = PEOPLE[(i // 2) + (8 if label == "pos" else 0)]  # two films per patient, one class each
            header = {k: v for k, v in person.items() if k not in ("PatientID", "StudyInstanceUID")}
            values = phantom(rng, 32, label == "pos").astype(np.float64) * 16 + rng.integers(0, 16, (32, 32))
            data = dicom_bytes(
                values,
                patient_id=person["PatientID"],
                study_uid=person["StudyInstanceUID"],
                window=(2048, 4096),
                monochrome1=i % 2 == 0,
                compress=i == 0,
                extra=header,
                uid_seed=f"{label}{i}",
            )
            (root / label / f"{label}_{i:02d}.dcm").write_bytes(data)


def _leaks(blob: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in blob]


def test_no_identifying_header_value_reaches_any_output(tmp_path, monkeypatch):
    from medcore.config import NotifySettings
    from medcore.layout import RunLayout
    from medcore.report.notify import build_email

    for name in ("MEDCORE_DATA_ROOT", "MEDCORE_RUNS_ROOT", "MEDCORE_REGISTRY_ROOT", "MEDCORE_GROUP_KEY"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data" / "films"
    _write_set(data)
    # The control: the inputs do hold every value, so a grep that finds none in the outputs means something.
    inputs = b"".join(p.read_bytes() for p in data.rglob("*.dcm"))
    assert _leaks(inputs) == SECRETS

    config = write_yaml(
        tmp_path / "phi.yaml",
        f"""
        data_root: {tmp_path / "data"}
        runs_root: {tmp_path / "runs"}
        registry: {{root: {tmp_path / "registry"}, gates: {{}}}}
        gradcam: {{samples: 1, deletion_images: 4, deletion_steps: 2}}
        validation: {{min_per_class: {{train: 1, val: 1, test: 1}}}}
        evaluation: {{small_sets: test_split}}  # cross-validation (ten more trainings) has its own test
        conditions:
          films: {{dataset: films, layout: folders, positive: [pos], negative: [neg]}}
        profiles:
          tiny: {{image_size: 32, epochs: 1, batch_size: 8, execution: eager}}
        """,
    )
    medcore = [sys.executable, "-m", "medcore.cli"]
    run = subprocess.run(
        medcore + ["run", "--config", str(config), "--run-id", "phi"], capture_output=True, timeout=900, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    validate = subprocess.run(
        medcore + ["validate", "--config", str(config), "--condition", "films", "--out", str(tmp_path / "validate")],
        capture_output=True,
        timeout=300,
    )
    assert validate.returncode == 0, validate.stderr.decode()[-2000:]
    model = tmp_path / "runs" / "phi" / "films" / "tiny" / "model.keras"
    predict = subprocess.run(
        medcore + ["predict", "--model", str(model), "--images", str(data), "--out", str(tmp_path / "scores.csv")],
        capture_output=True,
        timeout=300,
    )
    assert predict.returncode == 0, predict.stderr.decode()[-2000:]
    assert (tmp_path / "scores.csv").read_text().count(".dcm") == 32  # every film scored

    layout = RunLayout(tmp_path / "runs", "phi")
    email = build_email(layout, NotifySettings(recipients=("a@example.org",)))
    assert "model card" in layout.report_md.read_text()
    card = layout.model("films", "tiny").model_card.read_text()
    assert "12" in card and "MONOCHROME1" in card  # the card describes the DICOM set it was trained on

    outputs = {
        "stdout and log of medcore run": run.stdout + run.stderr,
        "medcore validate output": validate.stdout + validate.stderr,
        "medcore predict output": predict.stdout + predict.stderr,
        "e-mail subject and body": (email.subject + email.html).encode(),
    }
    written = [p for root in ("runs", "registry", "validate") for p in (tmp_path / root).rglob("*") if p.is_file()]
    written.append(tmp_path / "scores.csv")
    outputs.update({str(p.relative_to(tmp_path)): p.read_bytes() for p in written})
    assert any(name.endswith("split.csv") for name in outputs) and any(name.endswith(".keras") for name in outputs)
    assert "registry/films/phi__tiny.md" in outputs  # the champion's model card, copied with it
    leaked = {name: _leaks(blob) for name, blob in outputs.items() if _leaks(blob)}
    assert not leaked, leaked
