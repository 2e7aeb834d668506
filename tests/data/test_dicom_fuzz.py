"""Fuzzing DICOM headers: any header values, transfer syntax or cut end in pixels or a DicomReadError, never a
traceback, and never a decode larger than validation's limit (issue 39)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medcore.data.dicom import DicomReadError, read_dicom
from medcore.data.synthetic import dicom_bytes
from medcore.data.validation import DECODE_BUDGET, MAX_DECODED_BYTES, scan_file
from tests.fuzzing import FUZZ, count

pytestmark = pytest.mark.filterwarnings("ignore")  # pydicom warns about the values drawn here, on purpose

RAMP = np.tile(np.arange(32, dtype=np.uint16) * 120, (32, 1))
PLAIN = dicom_bytes(RAMP, patient_id="p", study_uid="1.2.3", window=(2048, 4096))
COMPRESSED = dicom_bytes(RAMP, patient_id="p", study_uid="1.2.3", compress=True)
SYNTAXES = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.5",  # RLE
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.100",  # MPEG2: no decoder
    "1.2.3.4",
    "1.2.840.10008.1.1",  # a SOP class, not a transfer syntax
]
SIZES = st.sampled_from([0, 1, 2, 31, 32, 33, 4096, 12000, 65535])
CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "Rows": SIZES,
        "Columns": SIZES,
        "BitsAllocated": st.sampled_from([0, 1, 8, 12, 16, 32, 64]),
        "BitsStored": st.sampled_from([0, 1, 8, 12, 16, 17, 32]),
        "HighBit": st.sampled_from([0, 7, 11, 15, 31]),
        "PixelRepresentation": st.sampled_from([0, 1, 2]),
        "SamplesPerPixel": st.sampled_from([0, 1, 3, 4]),
        "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "X"]),
        "NumberOfFrames": st.sampled_from([0, 1, 2, 100000]),
        "WindowCenter": st.sampled_from(["0", "-1e308", "nan", "2048", "abc"]),
        "WindowWidth": st.sampled_from(["0", "1", "-5", "inf", "4096"]),
        "RescaleSlope": st.sampled_from(["0", "1", "-1", "1e300", "nan"]),
        "RescaleIntercept": st.sampled_from(["0", "-1024", "1e300"]),
        "VOILUTFunction": st.sampled_from(["LINEAR", "SIGMOID", "LINEAR_EXACT", "?"]),
    },
)


def _mutated(base: bytes, changes: dict, syntax: str | None, cut: int | None) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(base))
    for keyword, value in changes.items():
        try:
            setattr(ds, keyword, value)
        except (ValueError, TypeError, OverflowError):  # pydicom refuses some values on assignment
            continue
    placeholder = None
    if syntax is not None:  # pydicom will not write some UIDs: a placeholder of the same length, swapped after
        placeholder = "9" * len(syntax)
        ds.file_meta.TransferSyntaxUID = placeholder
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer)
    except Exception:  # noqa: BLE001 a combination pydicom will not write is not a file anyone has
        return base
    data = buffer.getvalue()
    if placeholder is not None:
        data = data.replace(placeholder.encode(), syntax.encode(), 1)
    return data[:cut] if cut else data


@FUZZ
@given(
    which=st.sampled_from(["plain", "compressed"]),
    changes=CHANGES,
    syntax=st.one_of(st.none(), st.sampled_from(SYNTAXES)),
    cut=st.one_of(st.none(), st.integers(132, 4000)),
)
def test_hostile_dicom_headers_give_pixels_or_a_finding(which, changes, syntax, cut):
    """Pixels in [0, 1] as one finite 2-D frame, or a DicomReadError with a code and one line."""
    data = _mutated(PLAIN if which == "plain" else COMPRESSED, changes, syntax, cut)
    try:
        _info, unit = read_dicom(data, b"k", max_bytes=MAX_DECODED_BYTES, budget=DECODE_BUDGET.hold)
    except DicomReadError as problem:
        assert problem.code and "\n" not in problem.detail
    else:
        assert unit.ndim == 2 and np.isfinite(unit).all() and unit.dtype == np.float32
        assert unit.nbytes <= MAX_DECODED_BYTES
    count("dicom headers")


@FUZZ
@given(
    which=st.sampled_from(["plain", "compressed"]),
    edits=st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), max_size=16),
)
def test_bit_flipped_dicom_files_are_scanned_without_a_traceback(tmp_path_factory, which, edits):
    """Random bytes flipped anywhere in a DICOM file: validation's scan gives a status, never raises."""
    data = bytearray(PLAIN if which == "plain" else COMPRESSED)
    for position, value in edits:
        data[position % len(data)] = value
    path = tmp_path_factory.mktemp("dcm") / "x.dcm"
    path.write_bytes(bytes(data))
    scan = scan_file(str(path), key=b"k")
    assert scan.status == "ok" or "\n" not in scan.detail
    count("dicom bytes")
