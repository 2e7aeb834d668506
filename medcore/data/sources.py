"""Reading datasets into one manifest shape: class folders or a CSV manifest, paths checked, groups found.

A manifest is a pandas DataFrame with one row per image and these columns:
`path` (absolute), `relpath` (inside the dataset folder), `raw_label` (as written in the source),
`label` (1 positive, 0 negative, -1 excluded or unusable), `split` (train/val/test or empty) and
`group` (patient or study id; the file itself when none is known).

`read_source` also returns what validation needs to name problems: `source_split` (the split as
written), `where` (relpath, or `row N` for an empty manifest cell), `path_problem` (`invalid` or
`outside` for manifest paths that must never be opened) and `group_known`.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medcore.config import Condition, Config
from medcore.data.splits import label_manifest
from medcore.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "COLUMNS", "SOURCE_COLUMNS", "Source", "read_source", "read_manifest", "read_studies"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
COLUMNS = ["path", "relpath", "raw_label", "label", "split", "group"]
SOURCE_COLUMNS = ["source_split", "where", "path_problem", "group_known"]
_MAX_PATH_CHARS = 4096  # PATH_MAX on Linux; longer cells are garbage, not paths


@dataclass(frozen=True)
class Source:
    """What a dataset folder holds: the manifest rows, plus files the layout skipped (not image names)."""

    frame: pd.DataFrame
    skipped: tuple[str, ...] = field(default=())


def _normalise_split(value: object) -> str:
    text = str(value).strip().lower() if value is not None and not pd.isna(value) else ""
    return _SPLIT_ALIASES.get(text, "")


def _is_utf8(text: str) -> bool:
    # File names that are not UTF-8 reach Python as surrogate escapes, which no JSON or CSV writer accepts.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable_path(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _within(path: str, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _walk(root: Path) -> list[tuple[str, tuple[str, ...], str]]:
    """Return (path, parts relative to `root`, kind) of every entry that may be a file, sorted; hidden names skipped.

    `kind` is "file", or "outside" for a symlink (to a file or a folder) that leads out of `root`: such
    links are listed so validation can name them, and never opened or followed, as in the CSV layout.
    Symlinked folders inside the dataset are followed (sets are often assembled from links).
    os.scandir reuses the file type the directory listing already holds, which makes this several
    times faster than Path.rglob plus a stat per file on sets of thousands of images.
    """
    root_real = os.path.realpath(root)
    found: list[tuple[str, tuple[str, ...], str]] = []
    pending: list[tuple[str, tuple[str, ...], frozenset[str]]] = [(str(root), (), frozenset())]
    while pending:
        folder, parts, ancestors = pending.pop()
        real = os.path.realpath(folder)
        if real in ancestors:
            continue  # a symlink loop; two links to one folder are both listed, so their copies get flagged
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # an unreadable folder holds nothing we could train on
        for entry in entries:
            if entry.name.startswith("."):
                continue  # .DS_Store, .git and friends are not data
            here = parts + (entry.name,)
            try:
                if entry.is_symlink() and not _within(entry.path, root_real):
                    found.append((entry.path, here, "outside"))
                elif entry.is_dir():
                    pending.append((entry.path, here, ancestors | {real}))
                # A broken symlink is kept so that validation names it as missing instead of ignoring it.
                elif entry.is_file() or entry.is_symlink():
                    found.append((entry.path, here, "file"))
            except OSError:
                found.append((entry.path, here, "file"))  # let the scan name what is wrong with it
    return sorted(found, key=lambda item: item[1])


def _read_folders(root: Path) -> Source:
    """Class folders, optionally under split folders: `[split/]class/file`."""
    entries, rows, skipped = [], [], []
    for path, parts, kind in _walk(root):
        if kind == "outside" and os.path.isdir(path):
            # A folder link out of the dataset is not followed; one row names it, flagged and dropped before
            # its label is judged (the link's name stands in as the label).
            relpath = _printable_path("/".join(parts)) + "/"
            rows.append(
                {
                    "path": "",
                    "relpath": relpath,
                    "raw_label": parts[-1],
                    "source_split": "",
                    "split": "",
                    "where": relpath,
                    "path_problem": "outside",
                }
            )
            continue
        if len(parts) < 2:
            continue  # a loose file at the top (README, manifest) has no class folder, so no label
        if len(parts) == 2 and _normalise_split(parts[0]):
            continue  # a loose file inside a split folder has no class either
        entries.append((path, parts, kind))
    # Only when the set has split folders is an unrecognised top folder (e.g. `holdout/`) a split worth
    # naming; otherwise top folders are just folders (e.g. `images/true/1.jpg`).
    has_split_folders = any(len(parts) >= 3 and _normalise_split(parts[0]) for _, parts, _ in entries)
    for path, parts, kind in entries:
        relpath = "/".join(parts)
        if os.path.splitext(parts[-1])[1].lower() not in IMAGE_SUFFIXES:
            skipped.append(_printable_path(relpath))
            continue
        source_split = parts[0] if len(parts) >= 3 and (has_split_folders or _normalise_split(parts[0])) else ""
        valid = _is_utf8(relpath)
        problem = "outside" if kind == "outside" else "" if valid else "invalid"
        rows.append(
            {
                "path": path if not problem else "",
                "relpath": _printable_path(relpath),
                "raw_label": parts[-2],
                "source_split": source_split,
                "split": _normalise_split(source_split),
                "where": _printable_path(relpath),
                "path_problem": problem,
            }
        )
    columns = ["path", "relpath", "raw_label", "source_split", "split", "where", "path_problem"]
    return Source(pd.DataFrame(rows, columns=columns), tuple(skipped))


def _resolve_cell(root: Path, resolved_root: Path, image: str) -> tuple[str, str]:
    """Return (absolute path, problem) for one manifest cell; problem is '', 'invalid' or 'outside'."""
    if not image or "\x00" in image or len(image) > _MAX_PATH_CHARS or not _is_utf8(image):
        return "", "invalid"
    try:
        candidate = (root / image).resolve()
    except (OSError, RuntimeError, ValueError):  # symlink loops, names the OS rejects
        return "", "invalid"
    # A manifest must not point outside its dataset: such rows are flagged and never opened.
    if candidate == resolved_root or not candidate.is_relative_to(resolved_root):
        return "", "outside"
    return str(candidate), ""


def _read_table(manifest: Path) -> pd.DataFrame:
    try:
        # utf-8-sig: spreadsheets save a byte-order mark that would otherwise glue itself to the first column name.
        return pd.read_csv(manifest, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error, ValueError, OSError) as exc:
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{manifest}: cannot parse CSV: {problem[:200]}") from None


def _read_csv(root: Path, condition: Condition) -> Source:
    manifest = root / str(condition.manifest)
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found")
    table = _read_table(manifest)
    for column in (condition.image_column, condition.label_column, condition.group_column):
        if column and column not in table.columns:
            shown = ", ".join(_printable_path(str(c))[:40] for c in table.columns[:20])
            raise DataError(f"{manifest}: column {column!r} not found (columns: {shown})")
    # Manifests written on Windows use backslashes; inside the dataset they mean folders.
    images = table[condition.image_column].astype(str).str.strip().str.replace("\\", "/", regex=False)
    root_resolved = root.resolve()
    resolved = [_resolve_cell(root, root_resolved, image) for image in images]
    has_split = bool(condition.split_column) and condition.split_column in table.columns
    source_split = (
        table[condition.split_column].astype(str).str.strip() if has_split else pd.Series("", index=table.index)
    )
    frame = pd.DataFrame(
        {
            "path": [path for path, _ in resolved],
            "relpath": [_printable_path(image) for image in images],
            "raw_label": table[condition.label_column].values,
            "source_split": source_split.values,
            "split": [_normalise_split(v) for v in source_split],
            "where": [
                _printable_path(image)[:300] if image else f"row {i + 1} of {manifest.name} (empty image cell)"
                for i, image in enumerate(images)
            ],
            "path_problem": [problem for _, problem in resolved],
        }
    )
    if condition.group_column:
        frame["group"] = table[condition.group_column].astype(str).str.strip().values
    return Source(frame)


def read_source(config: Config, condition: Condition) -> Source:
    """Return every image the dataset names, labelled and grouped, with the columns validation needs."""
    root = config.dataset_dir(condition)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (set MEDCORE_DATA_ROOT or data_root in {config.path.name})")
    source = _read_folders(root) if condition.layout == "folders" else _read_csv(root, condition)
    frame = source.frame
    if frame.empty:
        raise DataError(f"{root}: no images found for layout {condition.layout!r}")
    if "group" in frame.columns:
        frame["group_known"] = frame["group"] != ""
        frame["group"] = frame["group"].where(frame["group_known"], frame["relpath"])
    else:
        frame["group"], frame["group_known"] = _groups_from_names(frame["relpath"], condition.group_pattern)
    frame["label"] = label_manifest(frame["raw_label"], condition)
    return Source(frame[COLUMNS + SOURCE_COLUMNS].reset_index(drop=True), source.skipped)


def read_studies(config: Config, condition: Condition) -> dict[str, str]:
    """relpath -> study id from the condition's manifest (`study_column`); empty where it names none."""
    if not condition.study_column or condition.layout != "csv":
        return {}
    manifest = config.dataset_dir(condition) / str(condition.manifest)
    table = _read_table(manifest)
    if condition.study_column not in table.columns:
        raise DataError(f"{manifest}: study column {condition.study_column!r} not found")
    images = table[condition.image_column].astype(str).str.strip().str.replace("\\", "/", regex=False)
    return dict(zip(images.map(_printable_path), table[condition.study_column].astype(str).str.strip()))


def read_manifest(config: Config, condition: Condition) -> pd.DataFrame:
    """Return every image the dataset names, labelled and grouped, before any check or split."""
    return read_source(config, condition).frame


def _groups_from_names(relpaths: pd.Series, pattern: str | None) -> tuple[pd.Series, pd.Series]:
    """Return (group, whether a pattern matched) per row; without a match the file is its own group."""
    if not pattern:
        return relpaths.copy(), pd.Series(False, index=relpaths.index)
    regex = re.compile(pattern)

    def group(relpath: str) -> str | None:
        match = regex.search(relpath.rsplit("/", 1)[-1])
        if not match:
            return None
        found = match.group(1) if match.groups() else match.group(0)
        return found or None  # an empty optional group says nothing about the patient

    groups = relpaths.map(group)
    return groups.fillna(relpaths), groups.notna()
