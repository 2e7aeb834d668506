"""The single pass over the files: each is hashed (SHA-256), decoded for real with OpenCV (never judged by
its extension) and reduced to a 256-bit perceptual hash, in a thread pool under a decode-memory budget.

Only these small records are kept, so memory does not grow with image size, and nothing in the dataset
folder is ever written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from medcore.data.limits import MAX_DECODED_BYTES, MAX_FILE_BYTES
from medcore.data.validation.types import FileScan

__all__ = ["scan_file", "scan_files", "DECODE_BUDGET"]

# Decoding allocates about twice what it yields (the decoder's buffers, then the reduced copy): measured
# 1.0 GiB for one 7999^2 RGBA16 PNG of 512 MB. Threads decode at once only while their sum fits this budget.
DECODE_BUDGET_BYTES = 2 * MAX_DECODED_BYTES
DECODE_OVERHEAD = 2
LARGE_PIXELS = 4096 * 4096  # counted as "very large", still used
MIN_SIDE = 16
HASH_SIDE = 64  # the perceptual hash is taken from the 16x16 lowest frequencies of a 64x64 DCT
# What training reads: tf.io.decode_image's formats, and DICOM through medcore.data.dicom.
TRAINABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "DICOM")
_TAIL = 1024  # bytes at the end of a file searched for its end marker

# --- the single pass over the files ------------------------------------------------------------


class _DecodeBudget:
    """Bytes that decoding threads may hold at once; a decode larger than the whole budget runs alone."""

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self._free = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        nbytes = max(0, min(int(nbytes), self.capacity))
        with self._free:
            self._free.wait_for(lambda: self.used + nbytes <= self.capacity)
            self.used += nbytes
        try:
            yield
        finally:
            with self._free:
                self.used -= nbytes
                self._free.notify_all()


DECODE_BUDGET = _DecodeBudget(DECODE_BUDGET_BYTES)


def _sniff_format(data: bytes) -> str | None:
    """Name the format from the file's first bytes (its extension says nothing)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"BM") and len(data) > 26:
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[128:132] == b"DICM":
        return "DICOM"
    if data.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    return None


def _looks_truncated(data: bytes, fmt: str | None) -> bool:
    tail = data[-_TAIL:]
    return (fmt == "JPEG" and b"\xff\xd9" not in tail) or (fmt == "PNG" and b"IEND" not in tail)


def _jpeg_damage(data: bytes) -> str:
    """Why a JPEG's coded data is damaged ("" if it is not), from a strict libjpeg-turbo decode.

    OpenCV (and TensorFlow in training) decode a JPEG cut short, or with zeroed bytes, without an
    error: libjpeg only warns and fills the rest grey. simplejpeg's strict mode turns exactly those
    warnings into errors. The decode is DCT-scaled to 1/8, which still reads every coded byte.
    """
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, min_height=1, min_width=1)
    except ValueError as exc:
        message = " ".join(str(exc).split())
        # Only the warnings of damaged coded data; other refusals (e.g. an unsupported variant) are left to OpenCV.
        # "Unsupported marker": a stray marker in the coded data, which OpenCV decodes and TensorFlow refuses.
        if "premature end" in message.lower() or message.startswith(("Corrupt JPEG data", "Unsupported marker")):
            return message[:120]
    return ""


def _png_damage(data: bytes) -> str:
    """Why a PNG's chunks are damaged ("" if they are not): the first chunk whose CRC does not match.

    libpng in OpenCV only warns on a bad CRC and decodes; TensorFlow's loader refuses the file. Checking every
    chunk's CRC (zlib, no decode) makes validate and predict refuse what training could not read.
    """
    import zlib

    at = 8
    while at + 12 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        end = at + 8 + length
        if end + 4 > len(data):
            return ""  # cut short: OpenCV's decode says so, as image_truncated
        kind = data[at + 4 : at + 8]
        if zlib.crc32(data[at + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            return f"chunk {kind.decode('latin-1')!r} at byte {at} fails its CRC"
        if kind == b"IEND":
            break
        at = end + 4
    return ""


_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}  # by colour type; palette and gray+alpha decode to 4 in OpenCV


def _decoded_bytes(data: bytes, fmt: str, header: Any) -> int | None:
    """What decoding will allocate, from the header alone; None if the header does not say."""
    if fmt == "PNG" and len(data) >= 26 and data[12:16] == b"IHDR":
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        depth = 2 if data[24] == 16 else 1  # Pillow reports 16-bit RGB(A) as 8-bit modes, so read IHDR itself
        return width * height * _PNG_CHANNELS.get(data[25], 4) * depth
    if not isinstance(header, tuple):
        return None
    from PIL import Image

    (width, height), mode = header[0], header[1]
    try:
        channels = 4 if mode in ("P", "PA", "LA") else Image.getmodebands(mode)
    except (KeyError, ValueError):
        channels = 4
    depth = 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1
    return width * height * channels * depth


def _header(data: bytes, fmt: str) -> tuple[tuple[int, int], str, bool] | str | None:
    """Return ((width, height), mode, has transparency) from the header, "too large", or None if unreadable."""
    from PIL import Image

    # The size limit below is medcore's own; Pillow's bomb warning would print one more line per file.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            return image.size, image.mode, "transparency" in image.info
    except Image.DecompressionBombError:
        return "too large"
    # Pillow's parsers raise many exception types on hostile bytes; the header is only a hint here,
    # the OpenCV decode below decides whether the file is an image.
    except Exception:  # noqa: BLE001
        return None


def _phash(gray: np.ndarray) -> bytes:
    coefficients = __import__("cv2").dct(gray)[:16, :16]
    return np.packbits(coefficients > np.median(coefficients)).tobytes()


def _describe(image: np.ndarray, fmt: str, header: Any, sha256: str) -> FileScan:
    """Reduce a decoded image to its scan record; the pixels are not kept."""
    import cv2

    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    bits = image.dtype.itemsize * 8
    full = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    small = cv2.resize(image, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32) / full
    if small.ndim == 3 and small.shape[2] >= 3:
        colour = small[..., :3]
        gray_content = float(np.abs(colour - colour.mean(axis=2, keepdims=True)).max()) <= 8 / 255
        gray = np.ascontiguousarray(colour @ np.array([0.114, 0.587, 0.299], dtype=np.float32))  # BGR weights
    else:
        gray_content = False
        gray = np.ascontiguousarray(small if small.ndim == 2 else small[..., 0])
    mode, transparent = (header[1], header[2]) if isinstance(header, tuple) else ("", False)
    encodings = [
        name
        for name, present in (
            ("alpha", channels in (2, 4) or transparent or mode in ("RGBA", "LA", "PA")),
            (f"{bits}-bit", bits > 8),
            ("palette", mode in ("P", "PA") or fmt == "GIF"),
            ("cmyk", mode == "CMYK"),
            ("very large", height * width > LARGE_PIXELS),
            ("gray as colour", gray_content),
        )
        if present
    ]
    return FileScan(
        "ok",
        sha256=sha256,
        phash=_phash(gray),
        height=height,
        width=width,
        channels=channels,
        bit_depth=bits,
        encodings=tuple(encodings),
        blank=float(np.ptp(gray)) <= 1 / 255,
        mean=float(gray.mean()),
    )


def _scan_dicom(data: bytes, sha256: str, key: Callable[[], bytes] | bytes) -> FileScan:
    """Decode a DICOM file through medcore.data.dicom (the display pipeline) and describe its first frame."""
    from medcore.data.dicom import DicomReadError, read_dicom

    try:
        info, unit = read_dicom(
            data, key() if callable(key) else key, max_bytes=MAX_DECODED_BYTES, budget=DECODE_BUDGET.hold
        )
    except DicomReadError as problem:
        return FileScan(problem.code, problem.detail, sha256)
    assert unit is not None  # cannot fire: with pixels (the default) read_dicom returns the frame or raises
    scan = _describe(unit, "DICOM", None, sha256)
    # Bit depth is the stored one (10-16), not the float32 the pixels are carried in.
    return dataclasses.replace(
        scan,
        bit_depth=info.bits_stored,
        dicom=info,
        encodings=tuple(e for e in scan.encodings if not e.endswith("-bit")),
    )


def scan_file(path: str, decode: bool = True, key: Callable[[], bytes] | bytes = b"") -> FileScan:
    """Read `path` once: hash it and, with `decode`, decode it and describe it. Never raises for bad files.

    `key` (or a function returning it) is the DICOM group key that PatientID and StudyInstanceUID are hashed with.
    """
    import cv2

    try:
        info = os.stat(path)
    except FileNotFoundError:
        return FileScan("file_missing")
    except (OSError, ValueError) as exc:
        return FileScan("file_unreadable", getattr(exc, "strerror", None) or type(exc).__name__)
    if not stat.S_ISREG(info.st_mode):
        return FileScan("file_unreadable", "not a regular file")  # a FIFO or device would block or never end
    if info.st_size == 0:
        return FileScan("image_empty")
    if info.st_size > MAX_FILE_BYTES:
        return FileScan("image_too_large", f"{info.st_size} bytes")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return FileScan("file_unreadable", exc.strerror or type(exc).__name__)
    if not data:
        return FileScan("image_empty")
    sha256 = hashlib.sha256(data).hexdigest()
    if not decode:
        return FileScan("ok", sha256=sha256)
    fmt = _sniff_format(data)
    if fmt == "DICOM":
        return _scan_dicom(data, sha256, key)
    if fmt is not None and fmt not in TRAINABLE_FORMATS:
        return FileScan("image_format_unsupported", fmt, sha256)
    header = _header(data, fmt) if fmt else None
    decoded = _decoded_bytes(data, fmt, header) if fmt else None
    if header == "too large" or (decoded or 0) > MAX_DECODED_BYTES:
        return FileScan("image_too_large", f"decodes to over {MAX_DECODED_BYTES // 2**20} MiB", sha256)
    if fmt == "JPEG":
        damage = _jpeg_damage(data)
        if damage:
            return FileScan("image_truncated", f"JPEG: {damage}", sha256)
    if fmt == "PNG":
        damage = _png_damage(data)
        if damage:
            return FileScan("image_corrupt", f"PNG: {damage}", sha256)
    # Unknown size (no readable header): charged as a limit-sized decode, the most it may be allowed.
    with DECODE_BUDGET.hold(DECODE_OVERHEAD * (decoded if decoded is not None else MAX_DECODED_BYTES)):
        try:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
        if image is None or image.size == 0:
            if fmt is None:
                return FileScan("image_not_an_image", "", sha256)
            return FileScan("image_truncated" if _looks_truncated(data, fmt) else "image_corrupt", fmt, sha256)
        if fmt is None:
            return FileScan("image_format_unsupported", "decodable, but not by the training loader", sha256)
        return _describe(image, fmt, header, sha256)


def _workers() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def scan_files(
    paths: Iterable[str], decode: Iterable[bool], workers: int | None = None, key: Callable[[], bytes] | bytes = b""
) -> list[FileScan]:
    """Scan files in a thread pool (OpenCV and hashlib release the GIL), in input order."""
    paths, decode = list(paths), list(decode)
    if not paths:
        return []
    with ThreadPoolExecutor(max_workers=workers or _workers()) as pool:
        return list(pool.map(scan_file, paths, decode, [key] * len(paths)))
