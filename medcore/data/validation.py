"""Dataset checks whose findings are data (code, severity, count, examples), read by the report.

No dataset problem may reach training unnoticed: every row the source lists ends up either in
the split manifest, excluded by configuration, or dropped by a named finding; a dataset that
cannot be trained on ends here with one line that says why. What each finding does is a policy
(`error`, `drop`, `warn`) from `medcore.config.CHECKS`, overridable in the config.

Files are read once, in a thread pool: each is hashed (SHA-256, for duplicates and the dataset
fingerprint), decoded for real with OpenCV (never judged by its extension), and reduced to a
256-bit perceptual hash. Only these small records are kept, so memory does not grow with image
size, and nothing in the dataset folder is ever written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import io
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcore.config import (
    CHECKS,
    MIN_PER_CLASS_DEFAULT,
    Condition,
    Config,
    Profile,
    ValidationSettings,
    canonical_label,
)
from medcore.data.datasets import SPLITS, assign_splits, cap_per_split, classify_labels, read_source, split_balance
from medcore.errors import DataError
from medcore.data.limits import MAX_DECODED_BYTES, MAX_FILE_BYTES

__all__ = [
    "Severity",
    "Finding",
    "ValidationResult",
    "FileScan",
    "validate_condition",
    "scan_file",
    "MIN_PER_CLASS",
    "balance_text",
]

MIN_PER_CLASS = MIN_PER_CLASS_DEFAULT
# The split manifest saved with a run: the datasets.COLUMNS plus each file's content hash and the split
# the source gave it, so a model traces to the exact bytes it saw and to where its splits came from.
MANIFEST_COLUMNS = ["path", "relpath", "raw_label", "label", "split", "group", "sha256", "source_split"]
MAX_EXAMPLES = 5
MAX_ROWS_NAMED = 200  # rows listed for a warning that dropped nothing; dropped or fatal rows are always all listed
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


class Severity(str, enum.Enum):
    """How much a finding matters; `error` means the data cannot be trained on."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


_SEVERITY_OF_POLICY = {
    "error": Severity.ERROR,
    "drop": Severity.WARNING,
    "warn": Severity.WARNING,
    "info": Severity.INFO,
}


@dataclass(frozen=True)
class Finding:
    """One kind of problem, how often it occurred and where."""

    code: str
    severity: Severity
    count: int
    message: str
    examples: tuple[str, ...] = ()
    rows: tuple[str, ...] = ()  # offending rows: all of them when any was dropped or the finding is fatal
    dropped: int = 0
    policy: str = ""
    dropped_rows: tuple[str, ...] = ()  # exactly the rows this finding removed from the manifest


@dataclass
class ValidationResult:
    """What validation concluded about one condition's dataset."""

    condition: str
    dataset_dir: Path
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    image_stats: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    manifest: pd.DataFrame | None = None
    totals: dict[str, int] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    split_balance: dict[str, Any] = field(default_factory=dict)  # made splits vs stratified (datasets.split_balance)

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def reason(self) -> str:
        """One line naming the first errors, for exit messages and the report."""
        errors = [f for f in self.findings if f.severity is Severity.ERROR]
        return "; ".join(f.message for f in errors[:3])

    def add(
        self,
        code: str,
        severity: Severity,
        message: str,
        rows: pd.DataFrame | list[str] | None = None,
        *,
        dropped_rows: Iterable[str] = (),
        policy: str = "",
    ) -> None:
        """Record a finding; `rows` (a frame with a `where` or `relpath` column, or names) are the offenders."""
        if isinstance(rows, pd.DataFrame):
            names = list(rows["where"] if "where" in rows.columns else rows["relpath"])
        else:
            names = list(rows or [])
        count = len(names) if rows is not None else 1
        names = [_printable(n) for n in names]
        dropped = [_printable(n) for n in dropped_rows]
        listed = names if dropped or severity is Severity.ERROR else names[:MAX_ROWS_NAMED]
        # The dropped rows are what a reader most needs to see, so they lead the examples.
        examples = list(dict.fromkeys(dropped[:MAX_EXAMPLES] + names[:MAX_EXAMPLES]))[:MAX_EXAMPLES]
        self.findings.append(
            Finding(
                code,
                severity,
                count,
                _printable(message, 600),
                tuple(examples),
                tuple(listed),
                len(dropped),
                policy,
                tuple(dropped),
            )
        )

    def to_dict(self) -> dict:
        order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
        return {
            "condition": self.condition,
            "dataset_dir": self.dataset_dir,
            "ok": self.ok,
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "counts": self.counts,
            "totals": self.totals,
            "image_stats": self.image_stats,
            "groups": self.groups,
            "settings": self.settings,
            "split_balance": self.split_balance,
            "findings": [
                {
                    "code": f.code,
                    "severity": f.severity.value,
                    "count": f.count,
                    "message": f.message,
                    "examples": list(f.examples),
                    "policy": f.policy,
                    "dropped": f.dropped,
                    "rows": list(f.rows),
                    "dropped_rows": list(f.dropped_rows),
                }
                for f in sorted(self.findings, key=lambda f: (order[f.severity], -f.count))
            ],
        }

    def summary(self) -> str:
        """A few human lines: verdict, totals, counts per split, findings."""
        lines = [f"{self.condition}: {'OK' if self.ok else 'NOT TRAINABLE'} ({self.dataset_dir})"]
        if self.totals:
            lines.append("  " + " ".join(f"{k}={v}" for k, v in self.totals.items()))
        for split, classes in self.counts.items():
            lines.append(f"  {split:5s} positive={classes.get('positive', 0)} negative={classes.get('negative', 0)}")
        if self.split_balance.get("splits_made"):
            lines.append("  " + balance_text(self.split_balance))
        for f in self.to_dict()["findings"]:
            shown = f"  [{f['severity']}] {f['code']} x{f['count']}: {f['message']}"
            if f["examples"] and f["severity"] != "info":
                shown += f" (e.g. {', '.join(f['examples'][:3])})"
            lines.append(shown)
        return "\n".join(lines) + "\n"


def balance_text(balance: dict[str, Any]) -> str:
    """One line: which splits the keyed hash made, and how far each split's positive share is from stratified."""
    parts = [
        f"{name} {row['positive_share']:.1%} ({row['deviation'] * 100:+.1f} pts)"
        for name, row in balance["splits"].items()
        if row["images"]
    ]
    return (
        f"{'/'.join(balance['splits_made'])} made by {balance['method']}; positive share "
        f"{', '.join(parts)} vs {balance['pool_positive_share']:.1%} if stratified"
        + (
            f"; {len(balance['rescued'])} group(s) moved in so each made split has both classes"
            if balance.get("rescued")
            else ""
        )
    )


def _printable(text: object, limit: int = 300) -> str:
    """One line of valid UTF-8: control characters escaped, file-name surrogates shown as escapes."""
    value = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    value = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
    return value if len(value) <= limit else value[: limit - 1] + "…"


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


@dataclass(frozen=True)
class FileScan:
    """What one read of a file tells: whether it is usable, its hashes, and its encoding."""

    status: str  # "ok", or the finding code that makes the file unusable
    detail: str = ""
    sha256: str = ""
    phash: bytes = b""  # 32 bytes: 256 bits
    height: int = 0
    width: int = 0
    channels: int = 0
    bit_depth: int = 0
    encodings: tuple[str, ...] = ()  # unusual but valid: alpha, 16-bit, palette, cmyk, very large, gray as colour
    blank: bool = False
    mean: float = 0.0  # mean intensity, 0..1
    dicom: Any = None  # medcore.data.dicom.DicomInfo for a DICOM file: coded values and keyed hashes only


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


# --- pure helpers over the manifest -------------------------------------------------------------


def _values(series: pd.Series, limit: int = 5) -> str:
    counts = series.astype(str).value_counts()
    shown = ", ".join(f"{_printable(v, 40)!r} ({n})" for v, n in counts.head(limit).items())
    return shown + (f", … {len(counts) - limit} more" if len(counts) > limit else "")


def _kept_split(present: Iterable[str], side: str) -> str:
    """The split whose copies survive a cross-split leak: train unless `side` says to drop from train."""
    order = ("train", "test", "val") if side == "heldout" else ("test", "val", "train")
    present = set(present)
    return next(s for s in order if s in present)


def _cross_split(frame: pd.DataFrame, key: pd.Series, side: str) -> tuple[pd.DataFrame, pd.Index, int]:
    """Rows whose `key` occurs in more than one split, the rows a drop would remove, and how many keys leak."""
    spans = frame.groupby(key, sort=False)["split"].nunique()
    leaking = spans.index[spans > 1]
    rows = frame[key.isin(leaking)]
    if rows.empty:
        return rows, rows.index, 0
    kept = rows.groupby(key[rows.index], sort=False)["split"].agg(lambda s: _kept_split(s, side))
    drop = rows.index[rows["split"].to_numpy() != key[rows.index].map(kept).to_numpy()]
    return rows, drop, len(leaking)


def _split_counts(rows: pd.DataFrame) -> str:
    counts = rows["split"].value_counts().reindex(list(SPLITS)).dropna().astype(int)
    return ", ".join(f"{split} {n}" for split, n in counts.items())


class _UnionFind:
    """Connected components over row positions; enough for a few thousand unions per dataset."""

    def __init__(self, n: int):
        self.parent = list(range(n))  # a list: element access is far cheaper than on a numpy array

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def union_equal(self, labels: np.ndarray) -> None:
        """Join rows that share a label."""
        _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
        for i, representative in enumerate(first[inverse]):
            if representative != i:
                self.union(i, int(representative))

    def components(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))])


def near_duplicate_components(hashes: np.ndarray, max_distance: int, block: int = 512) -> np.ndarray:
    """Label rows whose 256-bit perceptual hashes (n x 32 bytes) chain within `max_distance` bits.

    Identical hashes collapse first; the rest are compared all-pairs in fixed-size blocks, so memory
    stays bounded (a few MB) whatever the number of images. Returns one component id per row.
    """
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.int64)
    words = np.ascontiguousarray(hashes).view(np.uint64)  # n x 4
    unique, inverse = np.unique(words, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    found = _UnionFind(len(unique))
    for start in range(0, len(unique), block):
        rows = unique[start : start + block]
        for other in range(start, len(unique), block):
            cols = unique[other : other + block]
            # Word by word into a 2-D sum: five times faster than reducing a 3-D popcount array.
            distance = np.bitwise_count(rows[:, None, 0] ^ cols[None, :, 0]).astype(np.uint16)
            for word in range(1, words.shape[1]):
                distance += np.bitwise_count(rows[:, None, word] ^ cols[None, :, word])
            for i, j in zip(*np.nonzero(distance <= max_distance)):
                if start + i < other + j:
                    found.union(start + int(i), other + int(j))
    return found.components()[inverse]


def _fingerprint(frame: pd.DataFrame) -> str:
    """Hash of the file list, labels and every file's bytes, so a model can be traced to its exact data."""
    digest = hashlib.sha256()
    # The same recipe as before the single pass existed, so fingerprints of unchanged data still match.
    for relpath, _path, label, sha in sorted(zip(frame["relpath"], frame["path"], frame["raw_label"], frame["sha256"])):
        digest.update(f"{relpath}\0{label}\0".encode())
        digest.update(bytes.fromhex(sha))
    return digest.hexdigest()[:16]


# --- the checks ---------------------------------------------------------------------------------


class _Validation:
    """The working state of one validation: the rows still in play and the policy that judges them."""

    def __init__(self, result: ValidationResult, settings: ValidationSettings, condition: Condition):
        self.result, self.settings, self.condition = result, settings, condition
        self.dropped = 0
        self.dicom_groups = False  # set when DICOM headers supplied group ids

    def flag(
        self,
        code: str,
        rows: pd.DataFrame,
        message: str,
        frame: pd.DataFrame,
        drop: pd.Index | None = None,
        how: str = "",
    ) -> pd.DataFrame:
        """Record `rows` under `code`'s policy and return `frame` without whatever the policy removes.

        Rows that cannot be trained on leave `frame` whatever the policy (under `error` the run fails
        anyway); other rows leave only under `drop`, and then only `drop` (default: all of `rows`),
        which `how` describes in the message.
        """
        if rows.empty:
            return frame
        rule = CHECKS[code]
        policy = self.settings.policy.get(code, rule.default)
        removable = rows.index if drop is None else drop
        unusable = bool(rule.allowed) and "warn" not in rule.allowed
        removed = removable if policy == "drop" or unusable else removable[:0]
        dropped = rows.loc[rows.index.intersection(removed), "where"] if policy == "drop" else rows["where"][:0]
        self.dropped += len(dropped)
        action = {
            "drop": f"dropped {len(dropped)}" + (f" ({how})" if how else ""),
            "warn": "kept",
            "info": "",
            "error": f"policy error: set validation_policy.{code} to drop"
            + (" or warn" if "warn" in rule.allowed else "")
            + " to continue",
        }[policy]
        text = f"{message}; {action}" if action else message
        self.result.add(code, _SEVERITY_OF_POLICY[policy], text, rows, dropped_rows=dropped, policy=policy)
        return frame.drop(index=removed)

    def error(self, code: str, message: str) -> None:
        self.result.add(code, Severity.ERROR, message, policy="error")

    def note(self, code: str, message: str) -> None:
        """A finding about the dataset as a whole (no rows), under the code's policy."""
        policy = self.settings.policy.get(code, CHECKS[code].default)
        self.result.add(code, _SEVERITY_OF_POLICY[policy], message, policy=policy)


def _check_labels(v: _Validation, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Flag unusable and float-coded labels; return (task rows, rows of excluded classes)."""
    kinds = classify_labels(frame["raw_label"], v.condition)
    for kind, code, what in (
        ("missing", "label_missing", "have no label (blank, NaN or null)"),
        ("fractional", "label_fractional", "have a fractional label"),
        ("unknown", "label_unknown", "have a label neither positive, negative nor excluded"),
    ):
        rows = frame[kinds[frame.index] == kind]
        if not rows.empty:
            values = f": {_values(rows['raw_label'])}" if kind != "missing" else ""
            frame = v.flag(code, rows, f"{len(rows)} rows {what}{values}", frame)
    coded = frame[kinds[frame.index] == "float_coded"]
    if not coded.empty:
        frame = v.flag(
            "label_float_coded",
            coded,
            f"{len(coded)} labels are float-coded integers ({_values(coded['raw_label'], 3)}); cast safely to integers",
            frame,
        )
    excluded = frame[kinds[frame.index] == "excluded"]
    if not excluded.empty:
        v.flag(
            "label_excluded",
            excluded,
            f"{len(excluded)} images of excluded classes ({_values(excluded['raw_label'])}) are left out of the task",
            excluded,
        )
    return frame.drop(index=excluded.index), excluded


def _check_paths(v: _Validation, frame: pd.DataFrame) -> pd.DataFrame:
    for problem, code, what in (
        ("invalid", "path_invalid", "are empty or not usable as file names"),
        ("outside", "path_outside_dataset", "point outside the dataset folder"),
    ):
        rows = frame[frame["path_problem"] == problem]
        frame = v.flag(code, rows, f"{len(rows)} manifest paths {what}; never opened", frame)
    return frame


def _check_splits_named(v: _Validation, frame: pd.DataFrame) -> pd.DataFrame:
    """Split values that are not train/val/test (e.g. `holdout`) must not silently become training data."""
    rows = frame[(frame["source_split"] != "") & (frame["split"] == "")]
    return v.flag(
        "split_unknown",
        rows,
        f"{len(rows)} rows have a split that is not train/val/test "
        f"({_values(rows['source_split'])}); under warn they are split like unsplit rows",
        frame,
    )


_FILE_PROBLEMS = {
    "file_missing": "image files are missing",
    "file_unreadable": "files cannot be read (not a regular file, or an I/O error)",
    "image_empty": "files are empty (zero bytes)",
    "image_truncated": "images are truncated or have damaged coded data (cut short, zeroed bytes)",
    "image_corrupt": "images have a valid header but do not decode",
    "image_not_an_image": "files are not images in any known format",
    "image_format_unsupported": "files are images the training loader cannot read",
    "image_too_large": f"images are too large to decode safely (over {MAX_DECODED_BYTES // 2**20} MiB decoded or "
    f"{MAX_FILE_BYTES // 2**20} MiB)",
    "dicom_pixel_data_missing": "DICOM files hold no pixel data (e.g. structured reports, presentation states)",
    "dicom_transfer_syntax_unsupported": "DICOM files use a transfer syntax no installed decoder reads",
}


def _scan(
    v: _Validation,
    frame: pd.DataFrame,
    excluded: pd.DataFrame,
    workers: int | None,
    key: Callable[[], bytes] | bytes = b"",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every file once; flag unusable ones; return (task rows with scan columns, excluded rows hashed)."""
    excluded = excluded[excluded["path_problem"] == ""]
    # Excluded classes are hashed, not decoded: they matter only as copies that contradict a task label.
    wanted = dict.fromkeys(excluded["path"], False)
    wanted.update(dict.fromkeys(frame["path"], True))
    scans = dict(zip(wanted, scan_files(wanted, wanted.values(), workers, key)))
    names = [f.name for f in dataclasses.fields(FileScan)]
    frame = frame.assign(**{f"scan_{name}": [getattr(scans[p], name) for p in frame["path"]] for name in names})
    frame = frame.rename(columns={"scan_sha256": "sha256"})
    for code, what in _FILE_PROBLEMS.items():
        rows = frame[frame["scan_status"] == code]
        if not rows.empty:
            detail = _values(rows["scan_detail"], 3) if rows["scan_detail"].ne("").any() else ""
            if code == "dicom_transfer_syntax_unsupported":  # the whole line: it names the package to install
                detail = "; ".join(pd.unique(rows["scan_detail"])[:3])
            frame = v.flag(code, rows, f"{len(rows)} {what}" + (f" ({detail})" if detail else ""), frame)
    excluded = excluded.assign(sha256=[scans[p].sha256 if scans[p].status == "ok" else "" for p in excluded["path"]])
    return frame, excluded[excluded["sha256"] != ""]


def _image_stats(frame: pd.DataFrame) -> dict[str, Any]:
    heights, widths = frame["scan_height"].to_numpy(), frame["scan_width"].to_numpy()
    encodings = pd.Series([e for row in frame["scan_encodings"] for e in row], dtype=object).value_counts()
    return {
        "images": len(frame),
        "min_height": int(heights.min()),
        "median_height": float(np.median(heights)),
        "max_height": int(heights.max()),
        "min_width": int(widths.min()),
        "median_width": float(np.median(widths)),
        "max_width": int(widths.max()),
        "grayscale": int((frame["scan_channels"] == 1).sum()),
        "color": int((frame["scan_channels"] >= 3).sum()),
        "channels": {str(k): int(n) for k, n in frame["scan_channels"].value_counts().sort_index().items()},
        "bit_depth": {str(k): int(n) for k, n in frame["scan_bit_depth"].value_counts().sort_index().items()},
        "encodings": {str(k): int(n) for k, n in encodings.items()},
        "mean_intensity": float(frame["scan_mean"].mean()),
    }


def _check_images(v: _Validation, frame: pd.DataFrame) -> pd.DataFrame:
    """Describe the decoded images; flag tiny and blank ones; count unusual encodings."""
    v.result.image_stats = _image_stats(frame)
    unusual = frame[frame["scan_encodings"].map(bool)]
    if not unusual.empty:
        v.flag(
            "image_encoding_unusual",
            unusual,
            f"{len(unusual)} images have unusual but valid encodings ("
            + ", ".join(f"{k}: {n}" for k, n in v.result.image_stats["encodings"].items())
            + "); read as 8-bit, 3-channel in training",
            frame,
        )
    small = frame[np.minimum(frame["scan_height"], frame["scan_width"]) < MIN_SIDE]
    frame = v.flag("image_too_small", small, f"{len(small)} images have a side under {MIN_SIDE} px", frame)
    blank = frame[frame["scan_blank"]]
    return v.flag("image_blank", blank, f"{len(blank)} images are blank (one flat intensity)", frame)


def _dicom_facts(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame["scan_dicom"].map(lambda info: getattr(info, name))


def _check_dicom(v: _Validation, frame: pd.DataFrame) -> pd.DataFrame:
    """Describe the DICOM files; flag those that are no plain radiograph; take groups from their headers."""
    from medcore.data.dicom import MONOCHROME, RADIOGRAPH_MODALITIES

    dicom = frame[frame["scan_dicom"].notna()]
    if dicom.empty:
        return frame
    compressed = dicom[_dicom_facts(dicom, "compressed")]
    v.result.add(
        "dicom_summary",
        Severity.INFO,
        f"{len(dicom)} DICOM files: bits stored "
        f"{_values(_dicom_facts(dicom, 'bits_stored'))}; "
        f"photometric {_values(_dicom_facts(dicom, 'photometric'))}"
        f"; intensity window from {_values(_dicom_facts(dicom, 'windowing'))}; "
        + (
            f"{len(compressed)} compressed ("
            + ", ".join(
                f"{name}: {n}" for name, n in _dicom_facts(compressed, "transfer_syntax").value_counts().items()
            )
            + ")"
            if len(compressed)
            else "none compressed"
        ),
        policy="info",
    )
    checks = (
        (
            "dicom_modality_not_radiograph",
            lambda d: ~_dicom_facts(d, "modality").isin(RADIOGRAPH_MODALITIES),
            "are not radiographs (modality {})",
            "modality",
        ),
        (
            "dicom_multiframe",
            lambda d: _dicom_facts(d, "frames") > 1,
            "are multi-frame ({} frames); only the first frame would be used",
            "frames",
        ),
        (
            "dicom_photometric_unsupported",
            lambda d: ~_dicom_facts(d, "photometric").isin(MONOCHROME),
            "are not MONOCHROME1/2 (photometric interpretation {}); kept ones are read as luminance",
            "photometric",
        ),
        (
            "dicom_burned_in_annotation",
            lambda d: _dicom_facts(d, "burned_in_annotation"),
            "declare Burned In Annotation YES: text in the pixels may identify the patient and shows in Grad-CAM "
            "overlays{}",
            None,
        ),
    )
    for code, select, what, fact in checks:
        dicom = frame[frame["scan_dicom"].notna()]
        rows = dicom[select(dicom).to_numpy(dtype=bool)]
        if not rows.empty:
            detail = _values(_dicom_facts(rows, fact).replace("", "(blank)")) if fact else ""
            frame = v.flag(code, rows, f"{len(rows)} DICOM files " + what.format(detail), frame)
    for code, fact, what in (
        ("dicom_mixed_views", "view_position", "view positions"),
        ("dicom_mixed_body_parts", "body_part", "body parts"),
    ):
        dicom = frame[frame["scan_dicom"].notna()]
        values = _dicom_facts(dicom, fact) if not dicom.empty else pd.Series(dtype=str)
        named = values[values != ""]
        if named.nunique() > 1:
            common = named.value_counts().index[0]
            rows = dicom[(values != common).to_numpy()]
            frame = v.flag(
                code,
                rows,
                f"{what} differ within the condition ({_values(values.replace('', '(blank)'))})"
                f"; the {len(rows)} images not {common!r} are listed",
                frame,
            )
    if not (v.condition.group_column or v.condition.group_pattern):
        groups = frame["scan_dicom"].map(lambda info: info.group if info is not None else "")
        known = groups != ""
        frame = frame.assign(group=frame["group"].where(~known, groups), group_known=frame["group_known"] | known)
        v.dicom_groups = bool(known.any())
    return frame


def _check_conflicting_duplicates(v: _Validation, frame: pd.DataFrame, excluded: pd.DataFrame) -> pd.DataFrame:
    """Byte-identical files carrying different labels: the source contradicts itself about that image."""
    both = pd.concat(
        [
            frame[["where", "raw_label", "sha256"]].assign(task=True),
            excluded[["where", "raw_label", "sha256"]].assign(task=False),
        ]
    )
    labels = both["raw_label"].map(canonical_label)
    conflicting = labels.groupby(both["sha256"]).nunique()
    in_task = both.groupby("sha256")["task"].any()
    shas = conflicting.index[(conflicting > 1) & in_task[conflicting.index]]
    if shas.empty:
        return frame
    rows = both[both["sha256"].isin(shas)].sort_values(["sha256", "where"])
    named = rows.assign(where=rows["where"] + " [" + rows["raw_label"].astype(str) + "]")
    drop = frame.index[frame["sha256"].isin(shas)]
    message = f"{len(shas)} images occur with different labels ({len(rows)} files, {len(drop)} in the task)"
    return v.flag("duplicate_conflicting_labels", named, message, frame, drop=drop, how="every copy")


_DICOM_GROUPS = "DICOM PatientID, else StudyInstanceUID (keyed hashes)"


def _group_source(v: _Validation) -> str:
    """Where groups come from: the config's column or pattern, else DICOM headers; '' when nowhere."""
    condition = v.condition
    if condition.group_column:
        return f"column {condition.group_column!r}"
    if condition.group_pattern:
        return f"pattern {condition.group_pattern!r}"
    return _DICOM_GROUPS if v.dicom_groups else ""


def _check_groups_known(v: _Validation, frame: pd.DataFrame) -> None:
    source = _group_source(v)
    if not source:
        v.note(
            "groups_unknown",
            "no group_column or group_pattern: each image is its own group, so patient "
            "leakage across splits cannot be checked",
        )
        return
    missing = frame[~frame["group_known"]]
    v.flag(
        "group_missing", missing, f"{len(missing)} rows have no group id from {source}; each is its own group", frame
    )


def _check_cross_split(v: _Validation, frame: pd.DataFrame) -> pd.DataFrame:
    """Duplicates within a split, then exact copies, patients and near-duplicates shared by the given splits."""
    side = v.settings.leak_drop_from
    how = "from the held-out side, train kept whole" if side == "heldout" else "from train/val, test kept whole"

    copies = frame[frame.duplicated(["sha256", "split"], keep=False)].sort_values("relpath")
    if not copies.empty:
        extra = copies.index[copies.duplicated(["sha256", "split"], keep="first")]
        frame = v.flag(
            "duplicate_within_split",
            copies,
            f"{copies.groupby(['sha256', 'split']).ngroups} images "
            f"have byte-identical copies in the same split ({len(copies)} files)",
            frame,
            drop=extra,
            how="one copy of each kept",
        )

    rows, drop, n = _cross_split(frame, frame["sha256"], side)
    if n:
        frame = v.flag(
            "duplicate_across_splits",
            rows,
            f"{n} images are byte-identical across splits ({_split_counts(rows)} files)",
            frame,
            drop=drop,
            how=how,
        )

    if _group_source(v):
        known = frame[frame["group_known"]]
        rows, drop, n = _cross_split(known, known["group"], side)
        if n:
            first = rows.iloc[0]["group"]
            frame = v.flag(
                "group_leakage",
                rows,
                f"{n} groups (patients) appear in more than one split, e.g. "
                f"{_printable(first, 60)!r} ({_split_counts(rows)} images)",
                frame,
                drop=drop,
                how=how,
            )

    distinct = frame.groupby("near_cluster")["sha256"].nunique()
    near = frame[frame["near_cluster"].isin(distinct.index[distinct > 1])]  # byte-identical copies: see above
    rows, drop, n = _cross_split(near, near["near_cluster"], side)
    if n:
        frame = v.flag(
            "near_duplicate_across_splits",
            rows,
            f"{n} clusters of near-identical images (perceptual "
            f"hash within {v.settings.near_duplicate_distance}/256 bits) span splits "
            f"({_split_counts(rows)} images)",
            frame,
            drop=drop,
            how=how,
        )
    return frame


def _near_clusters(frame: pd.DataFrame, max_distance: int) -> np.ndarray:
    hashes = np.stack([np.frombuffer(b, np.uint8) for b in frame["scan_phash"]])
    return near_duplicate_components(hashes, max_distance)


def _split_groups(frame: pd.DataFrame) -> np.ndarray:
    """The key each row's split is drawn from: its group, joined with exact and near duplicates.

    A row's own key is its patient or study id, else its content hash (so a renamed file keeps its
    split). Rows linked by a shared group, identical bytes or a near-duplicate hash form one
    component, which takes the smallest own key of its members: every member lands in one split,
    and the key changes only if a new image joins the component.
    """
    own = np.where(
        frame["group_known"].to_numpy(dtype=bool),
        "group:" + frame["group"].astype(str),
        "sha256:" + frame["sha256"].astype(str),
    ).astype(str)
    found = _UnionFind(len(frame))
    for column in ("group", "sha256", "near_cluster"):
        found.union_equal(frame[column].to_numpy(dtype=str))
    components = found.components()
    smallest = pd.Series(own).groupby(components).transform("min")
    return smallest.to_numpy(dtype=str)


def _check_classes(v: _Validation, frame: pd.DataFrame) -> None:
    minimum, fraction = v.settings.min_per_class, v.settings.min_class_fraction
    skewed = []
    for split in SPLITS:
        part = frame[frame["split"] == split]
        positives, negatives = int((part["label"] == 1).sum()), int((part["label"] == 0).sum())
        v.result.counts[split] = {"positive": positives, "negative": negatives}
        for name, count in (("positive", positives), ("negative", negatives)):
            if count < minimum[split]:
                v.error("class_too_small", f"{split} split has {count} {name} images (need at least {minimum[split]})")
        if len(part) and min(positives, negatives) / len(part) < fraction:
            skewed.append(f"{split} {min(positives, negatives)}/{len(part)}")
    if skewed:
        v.note("class_imbalance", f"the minority class is under {fraction:.0%} of a split ({', '.join(skewed)})")


def _describe_groups(v: _Validation, frame: pd.DataFrame) -> None:
    sizes = frame.groupby("group").size()
    source = _group_source(v) or "none (one image per group)"
    v.result.groups = {
        "source": source,
        "groups": int(len(sizes)),
        "largest": int(sizes.max()),
        "median": float(sizes.median()),
    }
    if not _group_source(v):
        return
    v.result.add(
        "group_summary",
        Severity.INFO,
        f"{len(frame)} images form {len(sizes)} groups from {source} "
        f"(1 to {int(sizes.max())} images each); splits made here keep each group whole",
        policy="info",
    )
    mixed_groups = frame.groupby("group")["label"].nunique()
    mixed = frame[frame["group"].isin(mixed_groups.index[mixed_groups > 1])]
    if not mixed.empty:
        v.flag(
            "group_mixed_labels",
            mixed,
            f"{mixed['group'].nunique()} groups hold images of both classes "
            f"({len(mixed)} images), e.g. {_printable(mixed.iloc[0]['group'], 60)!r}",
            frame,
        )


def _lazy_group_key(config: Config) -> Callable[[], bytes]:
    """The DICOM group key, read (or made) only when a DICOM file is met."""
    import functools
    import threading

    from medcore.data.dicom import group_key

    lock = threading.Lock()

    @functools.cache
    def cached() -> bytes:
        return group_key(config.registry.root or config.path.parent / "registry")

    def key() -> bytes:
        with lock:  # scans run in threads; the first DICOM file makes the key once
            return cached()

    return key


def _nothing_left(result: ValidationResult, otherwise: str) -> str:
    """Why no row is left: "every image was dropped (n code, ...)" when findings removed them, else `otherwise`."""
    removed: dict[str, int] = {}
    for f in result.findings:
        rule = CHECKS.get(f.code)
        unusable = rule is not None and bool(rule.allowed) and "warn" not in rule.allowed
        n = f.dropped or (f.count if unusable and f.severity is not Severity.INFO else 0)
        if n:
            removed[f.code] = removed.get(f.code, 0) + n
    if not removed:
        return f"{result.dataset_dir}: {otherwise}"
    counts = ", ".join(f"{n} {code}" for code, n in sorted(removed.items(), key=lambda item: -item[1]))
    return f"every image was dropped ({counts}) in {result.dataset_dir}"


def validate_condition(
    config: Config, condition: Condition, profile: Profile | None = None, *, workers: int | None = None
) -> ValidationResult:
    """Check `condition`'s dataset and return findings plus the usable, split manifest.

    Never raises for a problem in the data: a dataset that cannot be used is an error finding.
    `workers` sets the file-reading threads (default: the usable CPUs, at most 4).
    """
    settings = config.validation_for(condition)
    result = ValidationResult(condition.name, config.dataset_dir(condition))
    result.settings = {
        "policy": dict(settings.policy),
        "min_per_class": dict(settings.min_per_class),
        "min_class_fraction": settings.min_class_fraction,
        "near_duplicate_distance": settings.near_duplicate_distance,
        "leak_drop_from": settings.leak_drop_from,
    }
    v = _Validation(result, settings, condition)
    try:
        source = read_source(config, condition)
    except DataError as exc:
        v.error("dataset_unreadable", str(exc))
        return result
    frame = source.frame
    listed = len(frame)
    if source.skipped:
        result.add(
            "file_skipped",
            Severity.INFO,
            f"{len(source.skipped)} files in class folders are not named as "
            f"images ({_values(pd.Series([Path(s).suffix or '(none)' for s in source.skipped]))}); not read",
            list(source.skipped),
            policy="info",
        )

    frame = _check_paths(v, frame)  # first: a path that must never be opened is named for that, whatever its label
    frame, excluded = _check_labels(v, frame)
    n_excluded = len(excluded)
    frame = _check_splits_named(v, frame)
    frame, excluded = _scan(v, frame, excluded, workers, _lazy_group_key(config))
    frame = _check_dicom(v, frame)
    if frame.empty:
        v.error("no_usable_images", _nothing_left(result, "no usable labelled images"))
        return _finish(result, listed, n_excluded, v.dropped)
    frame = _check_images(v, frame)
    frame = _check_conflicting_duplicates(v, frame, excluded)
    if frame.empty:  # the image checks can drop the last rows (blank, tiny, contradicting copies)
        v.error("no_usable_images", _nothing_left(result, "no usable labelled images"))
        return _finish(result, listed, n_excluded, v.dropped)
    _check_groups_known(v, frame)
    # Cross-split checks judge the source's own splits; rows without one are training candidates.
    frame = frame.assign(
        given_split=frame["split"],
        split=frame["split"].where(frame["split"] != "", "train"),
        near_cluster=_near_clusters(frame, settings.near_duplicate_distance),
    )
    frame = _check_cross_split(v, frame)
    if frame.empty:
        v.error("no_usable_images", _nothing_left(result, "no usable labelled images are left after the checks"))
        return _finish(result, listed, n_excluded, v.dropped)

    try:
        frame = frame.assign(split=frame["given_split"], split_group=_split_groups(frame))
        frame = assign_splits(frame, config.val_fraction, config.test_fraction, config.seed, group_column="split_group")
        given = set(frame["given_split"]) - {""}
        result.split_balance = split_balance(
            frame, frame["given_split"].isin(["", "train"]), [s for s in ("val", "test") if s not in given]
        )
    except (DataError, ValueError) as exc:
        v.error("split_impossible", f"cannot make train/val/test splits: {exc}")
        return _finish(result, listed, n_excluded, v.dropped)
    usable = len(frame)
    if profile is not None:
        frame = cap_per_split(frame, profile.max_images_per_split, config.seed)
    _check_classes(v, frame)
    _describe_groups(v, frame)
    order = frame["split"].map({s: i for i, s in enumerate(SPLITS)})
    manifest = frame.assign(order=order).sort_values(["order", "relpath"])[MANIFEST_COLUMNS]
    result.fingerprint = _fingerprint(manifest)
    result.manifest = manifest.reset_index(drop=True)
    return _finish(result, listed, n_excluded, v.dropped, usable, len(manifest))


def _finish(
    result: ValidationResult, listed: int, excluded: int, dropped: int, usable: int = 0, in_manifest: int = 0
) -> ValidationResult:
    result.totals = {
        "listed": listed,
        "excluded": excluded,
        "dropped": dropped,
        "usable": usable,
        "in_manifest": in_manifest,
    }
    return result
