"""Dataset checks whose findings are data (code, severity, count, examples), read by the report.

No dataset problem may reach training unnoticed: unusable rows are dropped and reported,
and a dataset that cannot be trained on ends here with one line that says why.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medcore.config import Condition, Config, Profile
from medcore.datasets import SPLITS, assign_splits, cap_per_split, read_manifest
from medcore.errors import DataError

__all__ = ["Severity", "Finding", "ValidationResult", "validate_condition", "MIN_PER_CLASS"]

MIN_PER_CLASS = {"train": 2, "val": 1, "test": 1}
MAX_EXAMPLES = 5


class Severity(str, enum.Enum):
    """How much a finding matters; `error` means the data cannot be trained on."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    """One kind of problem, how often it occurred and where."""

    code: str
    severity: Severity
    count: int
    message: str
    examples: tuple[str, ...] = ()


@dataclass
class ValidationResult:
    """What validation concluded about one condition's dataset."""

    condition: str
    dataset_dir: Path
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    image_stats: dict[str, float] = field(default_factory=dict)
    fingerprint: str = ""
    manifest: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def reason(self) -> str:
        """One line naming the first error, for exit messages and the report."""
        errors = [f for f in self.findings if f.severity is Severity.ERROR]
        return "; ".join(f.message for f in errors[:3])

    def add(self, code: str, severity: Severity, message: str, rows: pd.DataFrame | list[str] | None = None) -> None:
        examples = list(rows["relpath"]) if isinstance(rows, pd.DataFrame) else list(rows or [])
        count = len(examples) if rows is not None else 1
        self.findings.append(Finding(code, severity, count, message, tuple(map(str, examples[:MAX_EXAMPLES]))))

    def to_dict(self) -> dict:
        order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
        return {
            "condition": self.condition,
            "dataset_dir": self.dataset_dir,
            "ok": self.ok,
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "counts": self.counts,
            "image_stats": self.image_stats,
            "findings": [
                {"code": f.code, "severity": f.severity.value, "count": f.count, "message": f.message,
                 "examples": list(f.examples)}
                for f in sorted(self.findings, key=lambda f: (order[f.severity], -f.count))
            ],
        }

    def summary(self) -> str:
        """A few human lines: verdict, counts per split, findings."""
        lines = [f"{self.condition}: {'OK' if self.ok else 'NOT TRAINABLE'} ({self.dataset_dir})"]
        for split, classes in self.counts.items():
            lines.append(f"  {split:5s} positive={classes.get('positive', 0)} negative={classes.get('negative', 0)}")
        for f in self.to_dict()["findings"]:
            lines.append(f"  [{f['severity']}] {f['code']} x{f['count']}: {f['message']}")
        return "\n".join(lines) + "\n"


def _decode_stats(path: str) -> tuple[int, int, int] | None:
    """Return (height, width, channels) of the decoded image, or None if it cannot be decoded."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    channels = 1 if image.ndim == 2 else image.shape[2]
    return image.shape[0], image.shape[1], channels


def _fingerprint(frame: pd.DataFrame) -> str:
    """Hash of the file list and every file's bytes, so a model can be traced to its exact data."""
    digest = hashlib.sha256()
    for relpath, path, label in sorted(zip(frame["relpath"], frame["path"], frame["raw_label"])):
        digest.update(f"{relpath}\0{label}\0".encode())
        with open(path, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()[:16]


def validate_condition(config: Config, condition: Condition, profile: Profile | None = None) -> ValidationResult:
    """Check `condition`'s dataset and return findings plus the usable, split manifest."""
    result = ValidationResult(condition.name, config.dataset_dir(condition))
    try:
        frame = read_manifest(config, condition)
    except DataError as exc:
        result.add("dataset_unreadable", Severity.ERROR, str(exc))
        return result

    raw = frame["raw_label"].astype(str).str.strip()
    float_coded = raw.str.fullmatch(r"-?\d+\.0+")
    if float_coded.any():
        result.add("label_float_coded", Severity.WARNING,
                   f"{int(float_coded.sum())} labels are float-coded integers (e.g. {raw[float_coded].iloc[0]!r}); "
                   "cast safely to integers", frame[float_coded])
    blank = raw.eq("") | raw.str.lower().isin({"nan", "none", "null"})
    if blank.any():
        result.add("label_missing", Severity.WARNING, f"{int(blank.sum())} rows have no label; dropped", frame[blank])
    excluded = (frame["label"] == -1) & ~blank
    if excluded.any():
        classes = ", ".join(sorted(set(raw[excluded]))[:8])
        result.add("label_excluded", Severity.INFO,
                   f"{int(excluded.sum())} images have labels outside positive/negative ({classes}); excluded",
                   frame[excluded])

    escapes = frame["path"] == ""
    if escapes.any():
        result.add("path_outside_dataset", Severity.WARNING,
                   f"{int(escapes.sum())} manifest paths are empty or point outside the dataset folder; dropped, never opened",
                   frame[escapes])
    candidates = frame[(frame["label"] >= 0) & ~escapes]
    exists = candidates["path"].map(lambda p: Path(p).is_file())
    if (~exists).any():
        result.add("file_missing", Severity.WARNING, f"{int((~exists).sum())} image files are missing; dropped",
                   candidates[~exists])
    candidates = candidates[exists]

    shapes = candidates["path"].map(_decode_stats)
    unreadable = shapes.isna()
    if unreadable.any():
        result.add("image_unreadable", Severity.WARNING,
                   f"{int(unreadable.sum())} files are empty, corrupt or not images; dropped", candidates[unreadable])
    usable = candidates[~unreadable].copy()
    if usable.empty:
        result.add("no_usable_images", Severity.ERROR, f"{result.dataset_dir}: no usable labelled images")
        return result
    dims = np.array(list(shapes[~unreadable]), dtype=np.int64)
    result.image_stats = {
        "min_height": dims[:, 0].min(), "max_height": dims[:, 0].max(),
        "min_width": dims[:, 1].min(), "max_width": dims[:, 1].max(),
        "grayscale": int((dims[:, 2] == 1).sum()), "color": int((dims[:, 2] >= 3).sum()),
    }

    try:
        usable = assign_splits(usable, config.val_fraction, config.test_fraction, config.seed)
    except (DataError, ValueError) as exc:
        result.add("split_impossible", Severity.ERROR, f"cannot make train/val/test splits: {exc}")
        return result
    if profile is not None:
        usable = cap_per_split(usable, profile.max_images_per_split, config.seed)

    for split in SPLITS:
        part = usable[usable["split"] == split]
        positives, negatives = int((part["label"] == 1).sum()), int((part["label"] == 0).sum())
        result.counts[split] = {"positive": positives, "negative": negatives}
        for name, count in (("positive", positives), ("negative", negatives)):
            if count < MIN_PER_CLASS[split]:
                result.add("class_too_small", Severity.ERROR,
                           f"{split} split has {count} {name} images (need at least {MIN_PER_CLASS[split]})")
    result.fingerprint = _fingerprint(usable)
    result.manifest = usable.reset_index(drop=True)
    return result
