"""The DICOM reader: the display pipeline, its failures as findings, and keyed group ids."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest

from medcore.data.dicom import DicomReadError, group_key, keyed_hash, read_dicom
from medcore.data.synthetic import dicom_bytes

KEY = b"test-key"


def _ramp(bits: int = 12, size: int = 40) -> np.ndarray:
    """Every stored value from 0 to 2**bits - 1 appears (so 8-bit quantisation would show)."""
    top = 2**bits - 1
    return (np.arange(size * size, dtype=np.float64) * top / (size * size - 1)).round().reshape(size, size)


def _read(data: bytes) -> tuple:
    return read_dicom(data, KEY)


def test_twelve_bits_survive_until_the_final_scaling():
    values = _ramp(12, 72)
    info, unit = _read(dicom_bytes(values, patient_id="a", study_uid="1.2.3", window=(2048, 4096)))
    assert info.bits_stored == 12 and unit.dtype == np.float32
    assert len(np.unique(unit)) > 2000  # 8-bit would leave at most 256 levels
    expected = np.clip((values - 2047.5) / 4095 + 0.5, 0, 1)  # LINEAR window, PS3.3 C.11.2.1.2.1
    np.testing.assert_allclose(unit, expected, atol=1e-5)


def test_monochrome1_is_inverted_to_look_like_monochrome2():
    values = _ramp(12)
    _, plain = _read(dicom_bytes(values, patient_id="a", study_uid="1.2.3", window=(2048, 4096)))
    info, inverted = _read(
        dicom_bytes(values, patient_id="a", study_uid="1.2.3", window=(2048, 4096), monochrome1=True)
    )
    assert info.photometric == "MONOCHROME1"
    # Stored inverted, shown inverted again: the same picture (a window is not symmetric to the half step).
    np.testing.assert_allclose(inverted, plain, atol=1.5 / 4095)
    assert inverted[0, 0] < 0.01 and inverted[-1, -1] > 0.99


def test_rescale_then_window_and_the_image_range_without_one():
    values = _ramp(12)
    _, unit = _read(dicom_bytes(values, patient_id="a", study_uid="1.2.3", rescale=(2.0, -1000.0), window=(0, 2000)))
    hu = values * 2.0 - 1000.0
    np.testing.assert_allclose(unit, np.clip((hu + 0.5) / 1999 + 0.5, 0, 1), atol=1e-5)
    info, unit = _read(dicom_bytes(values[5:30, 5:30], patient_id="a", study_uid="1.2.3"))
    assert info.windowing == "image range"
    assert unit.min() == 0.0 and unit.max() == 1.0


def test_a_voi_lut_wins_over_the_window():
    import pydicom
    from pydicom.dataset import Dataset

    values = _ramp(10, 32)
    ds = pydicom.dcmread(
        io.BytesIO(dicom_bytes(values, patient_id="a", study_uid="1.2.3", bits_stored=10, window=(1, 2)))
    )
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [1024, 0, 8])
    item.add_new("LUTData", "US", [int(v) for v in (np.arange(1024) // 4)[::-1]])  # an inverting 8-bit LUT
    ds.VOILUTSequence = [item]
    buffer = io.BytesIO()
    ds.save_as(buffer)
    info, unit = _read(buffer.getvalue())
    assert info.windowing == "VOI LUT"
    np.testing.assert_allclose(unit, (255 - values // 4) / 255, atol=1e-6)


def test_jpeg2000_compressed_reads_exactly_like_uncompressed():
    values = _ramp(12)
    _, plain = _read(dicom_bytes(values, patient_id="a", study_uid="1.2.3", window=(2048, 4096)))
    info, compressed = _read(dicom_bytes(values, patient_id="a", study_uid="1.2.3", window=(2048, 4096), compress=True))
    assert info.compressed and "JPEG 2000" in info.transfer_syntax
    np.testing.assert_array_equal(compressed, plain)


def _with(data: bytes, **changes) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        elif keyword == "TransferSyntaxUID":
            ds.file_meta.TransferSyntaxUID = value
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def test_missing_pixels_and_an_undecodable_syntax_are_named_in_one_line():
    from pydicom.encaps import encapsulate

    base = dicom_bytes(_ramp(), patient_id="a", study_uid="1.2.3")
    report = _with(
        base,
        PixelData=None,
        Rows=None,
        Columns=None,
        BitsAllocated=None,
        BitsStored=None,
        HighBit=None,
        PixelRepresentation=None,
        SamplesPerPixel=None,
        PhotometricInterpretation=None,
    )
    with pytest.raises(DicomReadError) as missing:
        _read(report)
    assert missing.value.code == "dicom_pixel_data_missing"
    with pytest.raises(DicomReadError) as cut:
        _read(base[: base.index(b"\xe0\x7f\x10\x00")])  # cut just before the Pixel Data element
    assert cut.value.code == "image_truncated"
    video = _with(base, TransferSyntaxUID="1.2.840.10008.1.2.4.100", PixelData=encapsulate([b"\x00" * 64]))
    with pytest.raises(DicomReadError) as unsupported:
        _read(video)
    assert unsupported.value.code == "dicom_transfer_syntax_unsupported"
    assert "MPEG2 Main Profile / Main Level" in unsupported.value.detail and "\n" not in unsupported.value.detail
    assert "pydicom" in unsupported.value.detail
    with pytest.raises(DicomReadError) as broken:
        _read(base[:-100])  # cut inside the pixels
    assert broken.value.code == "image_corrupt"


def test_multiframe_gives_its_first_frame_and_counts_frames():
    values = _ramp()
    info, unit = _read(dicom_bytes(values, patient_id="a", study_uid="1.2.3", window=(2048, 4096), frames=3))
    assert info.frames == 3 and unit.shape == values.shape


def test_groups_are_keyed_hashes_never_the_ids():
    data = dicom_bytes(_ramp(), patient_id="PATIENT-4711", study_uid="1.2.840.99.4711")
    info, _ = read_dicom(data, KEY)
    other, _ = read_dicom(data, b"another key")
    assert info.group == info.patient_key == keyed_hash("PATIENT-4711", KEY, "p")
    assert info.patient_key != other.patient_key
    assert "4711" not in repr(info)
    no_patient, _ = read_dicom(_with(data, PatientID=None), KEY)
    assert no_patient.group == no_patient.study_key == keyed_hash("1.2.840.99.4711", KEY, "s")


def test_the_group_key_is_made_once_private_and_stable(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDCORE_GROUP_KEY", raising=False)
    first = group_key(tmp_path / "registry")
    assert len(first) == 64 and group_key(tmp_path / "registry") == first
    assert stat.S_IMODE(os.stat(tmp_path / "registry" / "group.key").st_mode) == 0o600
    monkeypatch.setenv("MEDCORE_GROUP_KEY", "from-the-environment")
    assert group_key(tmp_path / "registry") == b"from-the-environment"


# --- DICOM through validation: both layouts, findings as data, groups from the headers -------------------


def _phantom_values(rng: np.random.Generator, positive: bool, size: int = 32) -> np.ndarray:
    from medcore.data.synthetic import phantom

    return phantom(rng, size, positive).astype(np.float64) * 16 + rng.integers(0, 16, (size, size))


def _dicom_set(root, rng, per_class: int = 10, **odd) -> dict[str, str]:
    """`per_class` good DX files per class folder (two per patient) plus the odd files named in `odd`."""
    written = {}
    for label in ("pos", "neg"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            data = dicom_bytes(
                _phantom_values(rng, label == "pos"),
                patient_id=f"{label}-patient-{i // 2}",
                study_uid=f"1.2.3.{int(label == 'pos')}.{i}",
                window=(2048, 4096),
                monochrome1=i % 3 == 0,
            )
            (root / label / f"{label}{i}.dcm").write_bytes(data)
    for name, settings in odd.items():
        data = dicom_bytes(
            _phantom_values(rng, True), patient_id=f"odd-{name}", study_uid=f"9.9.{len(name)}", **settings
        )
        (root / "pos" / f"{name}.dcm").write_bytes(data)
        written[name] = f"pos/{name}.dcm"
    return written


def _rgb_dicom() -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((32, 32)), patient_id="rgb", study_uid="7.7")))
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _config(tmp_path, condition: str, extra: str = ""):
    from medcore.config import load_config
    from tests.conftest import write_yaml

    text = (
        f"data_root: {tmp_path / 'data'}\nruns_root: {tmp_path / 'runs'}\nregistry: {{root: {tmp_path / 'reg'}}}\n"
        f"{extra}\nconditions:\n  c: {condition}\nprofiles:\n  p: {{image_size: 32}}\n"
    )
    return load_config(write_yaml(tmp_path / "c.yaml", text))


@pytest.fixture(autouse=True)
def _own_roots(monkeypatch):
    for name in ("MEDCORE_DATA_ROOT", "MEDCORE_RUNS_ROOT", "MEDCORE_REGISTRY_ROOT", "MEDCORE_GROUP_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_class_folders_of_dicom_give_findings_with_policies_and_hashed_groups(tmp_path):
    from pydicom.encaps import encapsulate

    from medcore.data.validation import validate_condition

    root = tmp_path / "data" / "set"
    rng = np.random.default_rng(0)
    odd = _dicom_set(
        root,
        rng,
        ct={"modality": "CT"},
        cine={"frames": 3},
        burned={"burned_in": True},
        lateral={"view": "LL"},
        chest={"body_part": "CHEST"},
    )
    base = dicom_bytes(_phantom_values(rng, True), patient_id="x", study_uid="1.1")
    (root / "pos" / "video.dcm").write_bytes(
        _with(base, TransferSyntaxUID="1.2.840.10008.1.2.4.100", PixelData=encapsulate([b"\x00" * 64]))
    )
    (root / "pos" / "report.dcm").write_bytes(
        _with(
            base,
            PixelData=None,
            Rows=None,
            Columns=None,
            BitsAllocated=None,
            BitsStored=None,
            HighBit=None,
            PixelRepresentation=None,
            SamplesPerPixel=None,
            PhotometricInterpretation=None,
        )
    )
    (root / "pos" / "rgb.dcm").write_bytes(_rgb_dicom())
    config = _config(
        tmp_path,
        "{dataset: set, layout: folders, positive: [pos], negative: [neg]}",
        "validation: {min_per_class: {train: 1, val: 1, test: 1}}",
    )
    result = validate_condition(config, config.conditions["c"])
    assert result.ok, result.summary()
    found = {f["code"]: f for f in result.to_dict()["findings"]}
    for code, where in (
        ("dicom_modality_not_radiograph", odd["ct"]),
        ("dicom_multiframe", odd["cine"]),
        ("dicom_burned_in_annotation", odd["burned"]),
        ("dicom_mixed_views", odd["lateral"]),
        ("dicom_mixed_body_parts", odd["chest"]),
        ("dicom_transfer_syntax_unsupported", "pos/video.dcm"),
        ("dicom_pixel_data_missing", "pos/report.dcm"),
        ("dicom_photometric_unsupported", "pos/rgb.dcm"),
    ):
        assert found[code]["rows"] == [where], (code, found[code])
    # default policies: unusual objects are dropped, mixed views and body parts only warned about
    assert {
        found[c]["policy"]
        for c in (
            "dicom_modality_not_radiograph",
            "dicom_multiframe",
            "dicom_burned_in_annotation",
            "dicom_photometric_unsupported",
        )
    } == {"drop"}
    assert found["dicom_mixed_views"]["policy"] == "warn" and found["dicom_mixed_body_parts"]["policy"] == "warn"
    assert "MPEG2 Main Profile / Main Level" in found["dicom_transfer_syntax_unsupported"]["message"]
    kept = set(result.manifest["relpath"])
    assert odd["lateral"] in kept and odd["ct"] not in kept and "pos/rgb.dcm" not in kept
    assert result.image_stats["bit_depth"] == {"12": len(kept)}
    # groups: the two films of a patient share a keyed hash, and no raw id is anywhere in the manifest
    assert result.groups["groups"] == len(kept) - 10 and result.groups["source"].startswith("DICOM")
    assert result.manifest["group"].str.fullmatch(r"p-[0-9a-f]{16}").all()
    assert not result.manifest.to_csv().count("patient-")
    assert "dicom_summary" in found and "MONOCHROME1" in found["dicom_summary"]["message"]


def test_a_policy_can_keep_what_the_default_drops(tmp_path):
    from medcore.data.validation import validate_condition

    rng = np.random.default_rng(1)
    odd = _dicom_set(tmp_path / "data" / "set", rng, cine={"frames": 2, "window": (2048, 4096)})
    config = _config(
        tmp_path,
        "{dataset: set, layout: folders, positive: [pos], negative: [neg], "
        "validation_policy: {dicom_multiframe: warn}}",
    )
    result = validate_condition(config, config.conditions["c"])
    assert odd["cine"] in set(result.manifest["relpath"])


def test_a_csv_manifest_of_dicom_paths_trains_through_tf_data(tmp_path):
    import pandas as pd

    from medcore.data.datasets import image_dataset
    from medcore.data.validation import validate_condition

    root = tmp_path / "data" / "set"
    _dicom_set(root / "files", np.random.default_rng(2), per_class=16)
    rows = [
        {"image": f"files/{label}/{label}{i}.dcm", "label": label, "split": "test" if i < 2 else "train"}
        for label in ("pos", "neg")
        for i in range(16)
    ]
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    config = _config(tmp_path, "{dataset: set, layout: csv, manifest: labels.csv, positive: [pos], negative: [neg]}")
    result = validate_condition(config, config.conditions["c"])
    assert result.ok, result.summary()
    manifest = result.manifest
    batches = list(
        image_dataset(
            manifest["path"].to_numpy(str), manifest["label"].to_numpy(np.float32), 32, 8, training=False, seed=0
        )
    )
    images = np.concatenate([b[0].numpy() for b in batches])
    assert images.shape == (len(manifest), 32, 32, 3)
    assert images.min() >= 0.0 and images.max() <= 255.0 and images.std() > 5
    # MONOCHROME1 files look like their MONOCHROME2 neighbours after the reader (same body, same brightness)
    mono1 = manifest["relpath"].str.extract(r"(\d+)\.dcm$")[0].astype(int) % 3 == 0
    means = images.mean(axis=(1, 2, 3))
    assert abs(means[mono1.to_numpy()].mean() - means[~mono1.to_numpy()].mean()) < 10


def test_a_huge_frame_is_refused_from_its_header_before_decoding():
    data = _with(dicom_bytes(_ramp(), patient_id="a", study_uid="1.2.3"), Rows=60000, Columns=60000)
    with pytest.raises(DicomReadError) as refused:
        read_dicom(data, KEY, max_bytes=512 * 2**20)
    assert refused.value.code == "image_too_large"


@pytest.mark.parametrize("uid", ["1.2.3.4", "1.2.840.10008.1.1", "not a uid"])
def test_a_transfer_syntax_uid_that_is_no_transfer_syntax_is_a_finding_not_a_traceback(uid):
    """An unknown UID, a UID of something else (Verification SOP class) or garbage as TransferSyntaxUID: the file
    is refused with dicom_transfer_syntax_unsupported and a PHI-free line (it was a ValueError, issue 39)."""
    # pydicom will not write a known non-syntax UID: write a placeholder of the same length, then swap the bytes.
    placeholder = "9" * len(uid)
    data = _with(dicom_bytes(_ramp(), patient_id="a", study_uid="1.2.3"), TransferSyntaxUID=placeholder)
    data = data.replace(placeholder.encode(), uid.encode(), 1)
    with pytest.raises(DicomReadError) as refused:
        read_dicom(data, KEY)
    assert refused.value.code == "dicom_transfer_syntax_unsupported"
    assert "not a transfer syntax" in refused.value.detail and uid not in refused.value.detail


def test_pydicom_logs_one_line_per_failure_through_medcore_logging_not_tracebacks(tmp_path):
    """Corrupt JPEG 2000 pixel data: the file is refused, and what pydicom logs reaches stderr through medcore's
    logging as single lines, with no traceback (it printed six full tracebacks, issue 39)."""
    import subprocess
    import sys

    import pydicom
    from pydicom.encaps import encapsulate

    ramp = np.tile(np.arange(64, dtype=np.uint16) * 60, (64, 1))
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(ramp, patient_id="a", study_uid="1.2", compress=True)))
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 4])
    ds.save_as(tmp_path / "bad.dcm")
    script = (
        "import sys\n"
        "from medcore.logs import setup_logging\n"
        "from medcore.data.dicom import read_dicom, DicomReadError\n"
        "setup_logging()\n"
        "try:\n"
        "    read_dicom(open(sys.argv[1], 'rb').read(), b'k')\n"
        "except DicomReadError as exc:\n"
        "    print(exc.code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bad.dcm")], capture_output=True, text=True)
    assert done.stdout.strip() == "image_corrupt", done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and lines, done.stderr[-2000:]
    assert all(" medcore.data.dicom: pydicom: " in line for line in lines), lines
