"""What validation returns: findings (code, severity, count, examples), the result, and one file's scan."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medcore.config import MIN_PER_CLASS_DEFAULT

__all__ = ["Severity", "Finding", "ValidationResult", "FileScan", "balance_text", "MIN_PER_CLASS", "MANIFEST_COLUMNS"]

MIN_PER_CLASS = MIN_PER_CLASS_DEFAULT
# The split manifest saved with a run: the datasets.COLUMNS plus each file's content hash and the split
# the source gave it, so a model traces to the exact bytes it saw and to where its splits came from.
MANIFEST_COLUMNS = ["path", "relpath", "raw_label", "label", "split", "group", "sha256", "source_split"]
MAX_EXAMPLES = 5
MAX_ROWS_NAMED = 200  # rows listed for a warning that dropped nothing; dropped or fatal rows are always all listed


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
