"""Dataset checks whose findings are data (code, severity, count, examples), read by the report.

No dataset problem may reach training unnoticed: every row the source lists ends up either in
the split manifest, excluded by configuration, or dropped by a named finding; a dataset that
cannot be trained on ends here with one line that says why. What each finding does is a policy
(`error`, `drop`, `warn`) from `medcore.config.CHECKS`, overridable in the config.

The package is split along its seams: `types` (what a validation returns), `scanning` (the single
pass over the files), `duplicates` (near-duplicate grouping and cross-split leaks), `checks` and
`leakage` (the checks), and `driver` (`validate_condition`, which runs them in order).
"""

from __future__ import annotations

from medcore.data.limits import MAX_DECODED_BYTES, MAX_FILE_BYTES
from medcore.data.validation.driver import validate_condition
from medcore.data.validation.duplicates import _cross_split as _cross_split  # medcore.nights.budget reads it
from medcore.data.validation.duplicates import near_duplicate_components
from medcore.data.validation.scanning import DECODE_BUDGET, scan_file, scan_files
from medcore.data.validation.types import (
    MANIFEST_COLUMNS,
    MIN_PER_CLASS,
    FileScan,
    Finding,
    Severity,
    ValidationResult,
    balance_text,
)

__all__ = [
    "Severity",
    "Finding",
    "ValidationResult",
    "FileScan",
    "validate_condition",
    "scan_file",
    "scan_files",
    "near_duplicate_components",
    "MIN_PER_CLASS",
    "MANIFEST_COLUMNS",
    "DECODE_BUDGET",
    "MAX_DECODED_BYTES",
    "MAX_FILE_BYTES",
    "balance_text",
]
