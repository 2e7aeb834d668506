"""DICOM in, pixels and a few non-identifying facts out: the only module that opens a DICOM header.

A file becomes a float image in [0, 1] by the standard's display pipeline, in float32 throughout so
10-16 bit detail survives until the caller's final scaling: the modality LUT (Rescale Slope and
Intercept, or a Modality LUT), then the VOI LUT if the file has one, else its first Window
Center/Width (LINEAR, LINEAR_EXACT or SIGMOID), else the image's own range; MONOCHROME1 is inverted
so bone is bright as in MONOCHROME2. Multi-frame files give their first frame.

No value that can identify a person leaves this module. `DicomInfo` holds coded values only
(modality, view, body part, photometric interpretation, transfer syntax, bit depth, frame count),
and PatientID and StudyInstanceUID only as HMAC-SHA256 keyed hashes, so a group id in split.csv
cannot be turned back into a patient id without the installation's key. pydicom's own warnings,
which quote offending values, are silenced, and no pydicom exception text is passed on.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import logging
import os
import re
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcore.config import settings

__all__ = [
    "DICOM_SUFFIXES",
    "RADIOGRAPH_MODALITIES",
    "DicomInfo",
    "DicomReadError",
    "is_dicom",
    "read_dicom",
    "load_pixels",
    "group_key",
    "keyed_hash",
    "KEY_ENV",
]

DICOM_SUFFIXES = (".dcm", ".dicom")
# Projection radiography: computed and digital radiography, mammography, intra-oral, panoramic, and
# the retired RG. CT, MR, US, XA (angiography), OT and SC (secondary captures, often screenshots) are not.
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG", "MG", "IO", "PX")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
KEY_ENV = "MEDCORE_GROUP_KEY"
_KEY_FILE = "group.key"
_CODE = re.compile(r"[^A-Z0-9_ ]")  # coded strings (CS) are upper case; anything else is not shown

# What would decode a syntax pydicom has no decoder for at all (it names the missing plugins itself).
_NO_DECODER = "no decoder exists for it in pydicom 3; export the images uncompressed or as JPEG/JPEG 2000"

log = logging.getLogger(__name__)


class _OneLine(logging.Handler):
    """pydicom's records (its decoders log each failed plugin with a full traceback) re-logged by medcore as
    one warning line each: the first line of the message, no traceback, whoever owns logging (CLI or Airflow)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())[:160]
        except Exception:  # noqa: BLE001 a record pydicom could not format is still one line
            text = "(unformattable message)"
        log.warning("pydicom: %s", text)


_PYDICOM = logging.getLogger("pydicom")
_PYDICOM.setLevel(logging.ERROR)  # its warnings may quote header values
if not any(isinstance(h, _OneLine) for h in _PYDICOM.handlers):
    _PYDICOM.addHandler(_OneLine())
_PYDICOM.propagate = False  # its children (pydicom.pixels.decoders.base, ...) reach only the handler above


class DicomReadError(Exception):
    """A file that cannot give pixels; `code` is the validation finding, `detail` one PHI-free line."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


@dataclass(frozen=True)
class DicomInfo:
    """What validation and the model card may know about one DICOM file: nothing that names a person."""

    modality: str
    view_position: str
    body_part: str
    photometric: str
    transfer_syntax: str  # the syntax's name, e.g. "JPEG 2000 Image Compression (Lossless Only)"
    compressed: bool
    bits_stored: int
    frames: int
    burned_in_annotation: bool
    windowing: str  # "VOI LUT", "window", or "image range"
    patient_key: str  # keyed hash of PatientID, "" when absent
    study_key: str  # keyed hash of StudyInstanceUID, "" when absent

    @property
    def group(self) -> str:
        """The patient's keyed hash, else the study's: the unit that must not straddle splits."""
        return self.patient_key or self.study_key


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file (128-byte preamble, then `DICM`)."""
    return data[128:132] == b"DICM"


def keyed_hash(value: str, key: bytes, kind: str) -> str:
    """`kind` + 16 hex digits of HMAC-SHA256(key, value); the same value and key always give the same id."""
    digest = hmac.new(key, f"{kind}\0{value}".encode("utf-8", "backslashreplace"), hashlib.sha256).hexdigest()
    return f"{kind}-{digest[:16]}"


def group_key(registry_root: Path) -> bytes:
    """The installation's hashing key: `$MEDCORE_GROUP_KEY`, else `<registry>/group.key`, made once (mode 600).

    It lives beside the champions because splits must stay the same from night to night, and every
    worker of a Celery deployment already shares the registry.
    """
    configured = settings().group_key  # $MEDCORE_GROUP_KEY (KEY_ENV)
    if configured:
        return configured.encode()
    path = Path(registry_root) / _KEY_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{_KEY_FILE}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_hex(32).encode())
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic: of two first runs, one key wins and both use it
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_bytes().strip()
    if not key:
        raise OSError(f"{path}: empty DICOM group key; delete it to make a new one (splits will change)")
    return key


def _code(ds, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, str):  # a multi-valued CS: the first value
        value = next(iter(value), "") if hasattr(value, "__iter__") else str(value)
    return _CODE.sub("", str(value).strip().upper())[:16]


def _integer(ds, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else default
    except Exception:  # noqa: BLE001 a damaged element (unknown VR, wrong length) reads as absent
        return default


def _parse(data: bytes):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data), force=False)
    # Hostile headers raise many types (fuzzing found BytesLengthException, a RuntimeError, for a file meta
    # group length cut to 0); none of their texts is passed on.
    except (InvalidDicomError, Exception) as exc:  # noqa: BLE001
        raise DicomReadError("image_corrupt", f"DICOM header unreadable ({type(exc).__name__})") from None


def _decoder_problem(syntax) -> str:
    """One line: why `syntax` cannot be decoded here and which package would decode it; '' if it can."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"transfer syntax {syntax.name} ({syntax}): {_NO_DECODER}"
    if decoder.is_available:
        return ""
    needs = "; ".join(decoder.missing_dependencies) or "a pydicom decoding plugin"
    return f"transfer syntax {syntax.name} ({syntax}): install one of: {needs}"


def _syntax(ds):
    """The file's transfer syntax UID; DicomReadError if the UID names no transfer syntax pydicom knows.

    pydicom's UID properties raise ValueError for those ("1.2.3.4", a SOP class UID, text), and
    its message would quote the value, so the finding says only what is wrong.
    """
    syntax = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) is not None else None
    if syntax is None:
        return None
    try:
        syntax.is_compressed, syntax.name  # noqa: B018 both raise for a UID that is not a transfer syntax
    except (ValueError, AttributeError, TypeError):
        raise DicomReadError(
            "dicom_transfer_syntax_unsupported", "TransferSyntaxUID is not a transfer syntax pydicom knows"
        ) from None
    return syntax


def describe(ds, key: bytes) -> DicomInfo:
    """The PHI-free facts of a parsed dataset (no pixel decoding)."""
    syntax = _syntax(ds)
    patient, study = str(ds.get("PatientID", "") or "").strip(), str(ds.get("StudyInstanceUID", "") or "").strip()
    windowing = (
        "VOI LUT"
        if "VOILUTSequence" in ds
        else "window"
        if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
        else "image range"
    )
    return DicomInfo(
        modality=_code(ds, "Modality"),
        view_position=_code(ds, "ViewPosition"),
        body_part=_code(ds, "BodyPartExamined"),
        photometric=_code(ds, "PhotometricInterpretation"),
        transfer_syntax=syntax.name if syntax is not None else "",
        compressed=bool(syntax is not None and syntax.is_compressed),
        bits_stored=_integer(ds, "BitsStored", _integer(ds, "BitsAllocated", 0)),
        frames=max(1, _integer(ds, "NumberOfFrames", 1)),
        burned_in_annotation=_code(ds, "BurnedInAnnotation") == "YES",
        windowing=windowing,
        patient_key=keyed_hash(patient, key, "p") if patient else "",
        study_key=keyed_hash(study, key, "s") if study else "",
    )


def _window(values: np.ndarray, ds) -> np.ndarray:
    """The first Window Center/Width to [0, 1] by the VOI LUT Function (PS3.3 C.11.2.1.2)."""

    def first(keyword: str) -> float:
        value = ds.get(keyword)
        return float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)

    centre, width = first("WindowCenter"), first("WindowWidth")
    function = _code(ds, "VOILUTFunction") or "LINEAR"
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / max(width, 1e-6)))
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / max(width, 1e-6) + 0.5, 0.0, 1.0)
    return np.clip((values - (centre - 0.5)) / max(width - 1.0, 1e-6) + 0.5, 0.0, 1.0)


def _voi_lut(values: np.ndarray, ds) -> np.ndarray:
    """The first VOI LUT (PS3.3 C.11.2.1.1), scaled by its own output range to [0, 1].

    Looked up here rather than with pydicom's apply_voi, which mis-indexes the float values the
    modality LUT yields.
    """
    item = ds.VOILUTSequence[0]
    entries, first, _bits = (int(v) for v in item.LUTDescriptor)
    table = np.asarray(item.LUTData, dtype=np.float32).reshape(-1)
    entries = entries or 65536  # 0 means 2**16 entries
    if first >= 2**15 and values.min() < 0:  # a signed first value stored as US
        first -= 2**16
    index = np.clip(np.rint(values) - first, 0, min(entries, len(table)) - 1).astype(np.int64)
    mapped = table[index]
    low, high = float(table.min()), float(table.max())
    return (mapped - low) / (high - low) if high > low else np.zeros_like(mapped)


def _image_range(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _gray(frame: np.ndarray, ds, info: DicomInfo) -> np.ndarray:
    """A colour frame (kept only when the policy allows it) to luminance in [0, 1]."""
    from pydicom.pixels import apply_color_lut

    if info.photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
        full = float(np.iinfo(frame.dtype).max) if np.issubdtype(frame.dtype, np.integer) else 1.0
    else:
        full = float(2 ** (info.bits_stored or 8) - 1)
    if frame.ndim == 3:
        frame = frame[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(frame.astype(np.float32) / full, 0.0, 1.0)


def to_unit(ds, info: DicomInfo) -> np.ndarray:
    """Decode the first frame and map it to float32 [0, 1] (H, W) by the display pipeline."""
    from pydicom.pixels import apply_modality_lut, pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = pixel_array(ds, index=0) if info.frames > 1 else ds.pixel_array
            if info.photometric not in MONOCHROME:
                return _gray(frame, ds, info)
            values = apply_modality_lut(frame, ds).astype(np.float32)
            if info.windowing == "VOI LUT":
                unit = _voi_lut(values, ds)
            elif info.windowing == "window":
                unit = _window(values, ds)
            else:
                unit = _image_range(values)
    except DicomReadError:
        raise
    # Decoders and LUT code raise many types on damaged data; none of their texts is passed on.
    except Exception as exc:  # noqa: BLE001
        raise DicomReadError("image_corrupt", f"DICOM pixel data does not decode ({type(exc).__name__})") from None
    unit = unit.astype(np.float32)
    if unit.ndim != 2 or unit.size == 0 or not np.isfinite(unit).all():
        raise DicomReadError("image_corrupt", "DICOM pixel data is not one finite 2-D frame")
    return 1.0 - unit if info.photometric == "MONOCHROME1" else unit


def read_dicom(
    data: bytes,
    key: bytes,
    pixels: bool = True,
    max_bytes: int | None = None,
    budget: Callable[[int], contextlib.AbstractContextManager] | None = None,
) -> tuple[DicomInfo, np.ndarray | None]:
    """Parse a DICOM file's bytes: its PHI-free facts and, with `pixels`, its first frame in [0, 1].

    Raises DicomReadError (code and one PHI-free line) for a file that cannot give pixels, or whose
    first frame would take more than `max_bytes` as float32 (judged from the header, before decoding).
    `budget(nbytes)`, if given, is held while the frame decodes (validation's decoding budget).
    """
    ds = _parse(data)
    try:
        info = describe(ds, key)
    except DicomReadError:
        raise
    # pydicom converts elements when first read: a damaged one raises then (NotImplementedError for an unknown VR).
    except Exception as exc:  # noqa: BLE001
        raise DicomReadError("image_corrupt", f"DICOM header unreadable ({type(exc).__name__})") from None
    size = _integer(ds, "Rows", 0) * _integer(ds, "Columns", 0) * max(1, _integer(ds, "SamplesPerPixel", 1)) * 4
    if max_bytes is not None and size > max_bytes:
        raise DicomReadError("image_too_large", f"DICOM frame decodes to over {max_bytes // 2**20} MiB")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if "Rows" in ds or "BitsAllocated" in ds:  # an image's header without its pixels: the file was cut short
            raise DicomReadError("image_truncated", "DICOM image header without Pixel Data")
        raise DicomReadError("dicom_pixel_data_missing", f"no Pixel Data (modality {info.modality or 'unknown'})")
    syntax = _syntax(ds)
    if syntax is not None:
        problem = _decoder_problem(syntax)
        if problem:
            raise DicomReadError("dicom_transfer_syntax_unsupported", problem)
    if not pixels:
        return info, None
    # The frame is decoded, then carried as float32 through the LUTs: held against the caller's budget.
    with budget(2 * size) if budget is not None else contextlib.nullcontext():
        return info, to_unit(ds, info)


def load_pixels(path: str | bytes) -> np.ndarray:
    """A DICOM file as float32 (H, W, 3) in 0-255, the range training feeds the network (for tf.data)."""
    name = path.decode() if isinstance(path, bytes) else str(path)
    with open(name, "rb") as handle:
        data = handle.read()
    from medcore.data.limits import MAX_DECODED_BYTES

    try:
        _, unit = read_dicom(data, b"", max_bytes=MAX_DECODED_BYTES)  # validate's limit, from the header
    except DicomReadError as exc:
        raise ValueError(f"{name}: {exc.detail}") from None
    assert unit is not None  # cannot fire: with pixels (the default) read_dicom returns the frame or raises
    return np.repeat((unit * 255.0)[..., None], 3, axis=2).astype(np.float32)
