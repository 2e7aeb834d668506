"""`validate_condition`: read the source, run every check in order, make the splits, return the manifest."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medcore.config import CHECKS, Condition, Config, Profile, ValidationSettings
from medcore.data.sources import read_source
from medcore.data.splits import SPLITS, assign_splits, cap_per_split, split_balance
from medcore.data.validation.checks import (
    _check_dicom,
    _check_images,
    _check_labels,
    _check_paths,
    _check_splits_named,
    _scan,
    _Validation,
    _values,
)
from medcore.data.validation.duplicates import _near_clusters, _split_groups
from medcore.data.validation.leakage import (
    _check_classes,
    _check_conflicting_duplicates,
    _check_cross_split,
    _check_groups_known,
    _describe_groups,
)
from medcore.data.validation.types import MANIFEST_COLUMNS, Severity, ValidationResult
from medcore.errors import DataError

__all__ = ["validate_condition"]


def _fingerprint(frame: pd.DataFrame) -> str:
    """Hash of the file list, labels and every file's bytes, so a model can be traced to its exact data."""
    digest = hashlib.sha256()
    # The same recipe as before the single pass existed, so fingerprints of unchanged data still match.
    for relpath, _path, label, sha in sorted(zip(frame["relpath"], frame["path"], frame["raw_label"], frame["sha256"])):
        digest.update(f"{relpath}\0{label}\0".encode())
        digest.update(bytes.fromhex(sha))
    return digest.hexdigest()[:16]


def _lazy_group_key(config: Config) -> Callable[[], bytes]:
    """The DICOM group key, read (or made) only when a DICOM file is met."""
    import functools

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
    result.settings = _settings_used(settings)
    v = _Validation(result, settings, condition)
    try:
        source = read_source(config, condition)
    except DataError as exc:
        v.error("dataset_unreadable", str(exc))
        return result
    frame = source.frame
    listed = len(frame)
    _note_skipped(result, source.skipped)
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
        frame = _split(config, frame, result)
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


def _settings_used(settings: ValidationSettings) -> dict[str, Any]:
    """The validation settings that applied, as validation.json records them."""
    return {
        "policy": dict(settings.policy),
        "min_per_class": dict(settings.min_per_class),
        "min_class_fraction": settings.min_class_fraction,
        "near_duplicate_distance": settings.near_duplicate_distance,
        "leak_drop_from": settings.leak_drop_from,
    }


def _note_skipped(result: ValidationResult, skipped: Sequence[str]) -> None:
    """The `file_skipped` finding: files in class folders not named as images, by suffix."""
    if skipped:
        result.add(
            "file_skipped",
            Severity.INFO,
            f"{len(skipped)} files in class folders are not named as "
            f"images ({_values(pd.Series([Path(s).suffix or '(none)' for s in skipped]))}); not read",
            list(skipped),
            policy="info",
        )


def _split(config: Config, frame: pd.DataFrame, result: ValidationResult) -> pd.DataFrame:
    """`frame` with train/val/test made where the source named none (groups and duplicates kept whole)."""
    frame = frame.assign(split=frame["given_split"], split_group=_split_groups(frame))
    frame = assign_splits(frame, config.val_fraction, config.test_fraction, config.seed, group_column="split_group")
    given = set(frame["given_split"]) - {""}
    result.split_balance = split_balance(
        frame, frame["given_split"].isin(["", "train"]), [s for s in ("val", "test") if s not in given]
    )
    return frame


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
