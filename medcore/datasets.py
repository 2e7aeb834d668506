"""Reading datasets into one manifest shape, splitting them, and feeding them to TensorFlow.

A manifest is a pandas DataFrame with one row per image and these columns:
`path` (absolute), `relpath` (inside the dataset folder), `raw_label` (as written in the source),
`label` (1 positive, 0 negative, -1 excluded or unusable), `split` (train/val/test or empty) and
`group` (patient or study id; the file itself when none is known).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from medcore.config import Condition, Config, Profile, canonical_label
from medcore.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "SPLITS", "read_manifest", "label_manifest", "assign_splits", "cap_per_split",
           "make_dataset"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "test": "test", "testing": "test"}
COLUMNS = ["path", "relpath", "raw_label", "label", "split", "group"]


def _normalise_split(value: object) -> str:
    text = str(value).strip().lower() if value is not None and not pd.isna(value) else ""
    return _SPLIT_ALIASES.get(text, "")


def _read_folders(root: Path) -> pd.DataFrame:
    """Class folders, optionally under split folders: `[split/]class/file`."""
    rows = []
    for file in sorted(root.rglob("*")):
        if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        parts = file.relative_to(root).parts
        if len(parts) < 2:
            continue  # a loose image has no class folder, so no label
        split = _normalise_split(parts[0]) if len(parts) >= 3 else ""
        rows.append({"path": str(file), "relpath": "/".join(parts), "raw_label": parts[-2], "split": split})
    return pd.DataFrame(rows, columns=["path", "relpath", "raw_label", "split"])


def _read_csv(root: Path, condition: Condition) -> pd.DataFrame:
    manifest = root / str(condition.manifest)
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found")
    try:
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{manifest}: cannot parse CSV: {str(exc).splitlines()[0]}") from None
    for column in (condition.image_column, condition.label_column, condition.group_column):
        if column and column not in table.columns:
            raise DataError(f"{manifest}: column {column!r} not found (columns: {', '.join(map(str, table.columns))})")
    images = table[condition.image_column].astype(str).str.strip()
    resolved_root = root.resolve()
    paths = []
    for image in images:
        candidate = (root / image).resolve() if image else resolved_root
        # A manifest must not point outside its dataset: such rows are kept (and flagged) but never opened.
        inside = image and candidate.is_relative_to(resolved_root) and candidate != resolved_root
        paths.append(str(candidate) if inside else "")
    frame = pd.DataFrame({
        "path": paths,
        "relpath": images.values,
        "raw_label": table[condition.label_column].values,
        "split": [_normalise_split(v) for v in table[condition.split_column]]
        if condition.split_column and condition.split_column in table.columns else "",
    })
    if condition.group_column:
        frame["group"] = table[condition.group_column].astype(str).str.strip().values
    return frame


def read_manifest(config: Config, condition: Condition) -> pd.DataFrame:
    """Return every image the dataset names, labelled and grouped, before any check or split."""
    root = config.dataset_dir(condition)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (set MEDCORE_DATA_ROOT or data_root in {config.path.name})")
    frame = _read_folders(root) if condition.layout == "folders" else _read_csv(root, condition)
    if frame.empty:
        raise DataError(f"{root}: no images found for layout {condition.layout!r}")
    if "group" not in frame.columns or frame["group"].eq("").all():
        frame["group"] = _groups_from_names(frame["relpath"], condition.group_pattern)
    else:
        frame["group"] = frame["group"].where(frame["group"] != "", frame["relpath"])
    frame["label"] = label_manifest(frame["raw_label"], condition)
    return frame[COLUMNS].reset_index(drop=True)


def _groups_from_names(relpaths: pd.Series, pattern: str | None) -> pd.Series:
    if not pattern:
        return relpaths.copy()
    regex = re.compile(pattern)

    def group(relpath: str) -> str:
        match = regex.search(Path(relpath).name)
        if not match:
            return relpath
        return match.group(1) if match.groups() else match.group(0)

    return relpaths.map(group)


def label_manifest(raw_labels: pd.Series, condition: Condition) -> np.ndarray:
    """Map raw labels to 1 (positive), 0 (negative) or -1 (excluded class or unusable value)."""
    positive, negative = set(condition.positive), set(condition.negative)
    labels = np.full(len(raw_labels), -1, dtype=np.int8)
    for i, raw in enumerate(raw_labels):
        if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "":
            continue
        text = canonical_label(raw)
        labels[i] = 1 if text in positive else 0 if text in negative else -1
    return labels


def _pick_fold(frame: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Return a boolean mask selecting about `fraction` of `frame`, stratified by label, whole groups only."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = frame["group"].to_numpy()
    n_groups = len(np.unique(groups))
    n_splits = max(2, min(int(round(1 / fraction)), n_groups))
    if n_groups < 2:
        raise DataError("cannot split a dataset with fewer than two images or groups")
    labels = frame["label"].to_numpy()
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    overall = labels.mean()

    def badness(held: np.ndarray) -> tuple[bool, float]:
        # With few groups a fold can miss a class entirely; prefer the fold that is most like the whole.
        return len(np.unique(labels[held])) < 2, abs(labels[held].mean() - overall)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" on small sets: handled above
        held = min((held for _, held in folds.split(np.zeros(len(frame)), labels, groups)), key=badness)
    mask = np.zeros(len(frame), dtype=bool)
    mask[held] = True
    return mask


def assign_splits(frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.DataFrame:
    """Fill in missing val/test splits from train, seeded, stratified and group-aware.

    Given splits are kept. Where none is given, test is carved first, then val from the rest, so
    a group never straddles two splits that this function made.
    """
    frame = frame.copy()
    given = set(frame["split"]) - {""}
    frame.loc[frame["split"] == "", "split"] = "train"
    if "test" not in given:
        train = frame["split"] == "train"
        mask = _pick_fold(frame[train], test_fraction, seed)
        frame.loc[frame.index[train][mask], "split"] = "test"
    if "val" not in given:
        train = frame["split"] == "train"
        remaining = 1.0 - (0.0 if "test" in given else test_fraction)
        mask = _pick_fold(frame[train], min(0.5, val_fraction / remaining), seed + 1)
        frame.loc[frame.index[train][mask], "split"] = "val"
    return frame


def cap_per_split(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """Return at most `limit` rows per split, keeping the class ratio (for smoke runs only)."""
    if not limit:
        return frame
    parts = []
    for _, split in frame.groupby("split", sort=False):
        if len(split) <= limit:
            parts.append(split)
            continue
        share = limit / len(split)
        parts.append(split.groupby("label", group_keys=False).sample(frac=share, random_state=seed))
    return pd.concat(parts).sort_index()


def make_dataset(frame: pd.DataFrame, profile: Profile, *, training: bool, seed: int):
    """Return a batched tf.data pipeline of (uint8-range float image, float label) pairs.

    Decodes each file once (caching the resized tensors), turns grayscale into three channels,
    and prefetches, so training does not wait on disk or JPEG decoding.
    """
    import tensorflow as tf

    size = profile.image_size

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, (size, size), antialias=True)
        image.set_shape((size, size, 3))
        return image, label

    data = tf.data.Dataset.from_tensor_slices(
        (frame["path"].to_numpy(dtype=str), frame["label"].to_numpy(dtype=np.float32))
    )
    data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if training:
        data = data.shuffle(len(frame), seed=seed, reshuffle_each_iteration=True)
    return data.batch(profile.batch_size).prefetch(tf.data.AUTOTUNE)
