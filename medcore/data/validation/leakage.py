"""The checks across rows: contradicting copies, group ids, leaks across splits, class counts, group summary."""

from __future__ import annotations

import pandas as pd

from medcore.config import canonical_label
from medcore.data.splits import SPLITS
from medcore.data.validation.checks import _split_counts, _Validation
from medcore.data.validation.duplicates import _cross_split
from medcore.data.validation.types import Severity, _printable


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
