"""Reading datasets into one manifest shape, splitting them, and feeding them to TensorFlow.

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
import hashlib
import hmac
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcore.config import Condition, Config, Profile, canonical_label
from medcore.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "band_mask",
    "load_images",
    "SPLITS",
    "COLUMNS",
    "SOURCE_COLUMNS",
    "Source",
    "read_source",
    "read_manifest",
    "label_manifest",
    "classify_labels",
    "parse_label",
    "split_draw",
    "split_balance",
    "assign_splits",
    "cap_per_split",
    "make_dataset",
    "border_eraser",
    "image_dataset",
    "padded_box",
    "content_masks",
    "read_studies",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}
SPLITS = ("train", "val", "test")
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
_MISSING_LABELS = {"", "nan", "none", "null", "na", "n/a"}
_PLAIN_INT = re.compile(r"[+-]?\d+")
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


def parse_label(raw: object, positive: set[str], negative: set[str], excluded: set[str]) -> tuple[str, int]:
    """One raw label value as (kind, class): kind is ok, float_coded (usable after a cast), excluded, missing,
    fractional or unknown; class is 1 (positive), 0 (negative) or -1 (anything else)."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return "missing", -1
    text = str(raw).strip()
    label = canonical_label(text)
    value = -1 if not text else 1 if label in positive else 0 if label in negative else -1
    if text.lower() in _MISSING_LABELS:
        return "missing", value
    if value != -1:
        return ("ok" if label == text or _PLAIN_INT.fullmatch(text) else "float_coded"), value
    if label in excluded:
        return "excluded", value
    try:
        number = float(text)
    except ValueError:
        return "unknown", value
    return ("fractional" if math.isfinite(number) and not number.is_integer() else "unknown"), value


def _parsed(raw_labels: pd.Series, condition: Condition, part: int) -> pd.Series:
    sets = set(condition.positive), set(condition.negative), set(condition.exclude)
    # Labels repeat a lot, so parse each distinct value once.
    parsed = {value: parse_label(value, *sets)[part] for value in pd.unique(raw_labels)}
    return raw_labels.map(parsed)


def classify_labels(raw_labels: pd.Series, condition: Condition) -> pd.Series:
    """Return per row: ok, float_coded (usable after a cast), excluded, missing, fractional or unknown."""
    return _parsed(raw_labels, condition, 0)


def label_manifest(raw_labels: pd.Series, condition: Condition) -> np.ndarray:
    """Map raw labels to 1 (positive), 0 (negative) or -1 (excluded class or unusable value)."""
    return _parsed(raw_labels, condition, 1).to_numpy(dtype=np.int8)


def split_draw(keys: Iterable[str], seed: int) -> np.ndarray:
    """A number in [0, 1) per key from a keyed hash (HMAC-SHA-256, the seed as key).

    The draw of a key depends on nothing but the key and the seed, so adding or removing other
    images never changes it: that is what keeps an image in its split while a dataset grows.
    """
    secret = str(seed).encode()
    return np.array(
        [
            int.from_bytes(
                hmac.new(secret, str(k).encode("utf-8", "surrogatepass"), hashlib.sha256).digest()[:8], "big"
            )
            / 2.0**64
            for k in keys
        ],
        dtype=np.float64,
    )


def assign_splits(
    frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int, group_column: str = "group"
) -> pd.DataFrame:
    """Fill in missing val/test splits from train by a keyed hash of each group; given splits are kept.

    Each group (`group_column`: patient, study, else the image's content hash) draws one number
    from `split_draw`; where the set ships no test split, a draw under `test_fraction` makes the
    group test, and where it ships no val split, the next `val_fraction` makes it val. A group
    never straddles two splits made here, and growing or shrinking the set moves no image. The
    price is that class balance per split is left to chance rather than stratified:
    `split_balance` says by how much.
    """
    frame = frame.copy()
    given = set(frame["split"]) - {""}
    frame.loc[frame["split"] == "", "split"] = "train"
    pool = frame["split"] == "train"
    if frame.loc[pool, group_column].nunique() < 2 and not {"val", "test"} <= given:
        raise DataError("cannot split a dataset with fewer than two images or groups")
    test_share = 0.0 if "test" in given else test_fraction
    val_share = 0.0 if "val" in given else val_fraction
    draw = pd.Series(split_draw(frame.loc[pool, group_column].astype(str), seed), index=frame.index[pool])
    frame.loc[draw.index[draw < test_share], "split"] = "test"
    frame.loc[draw.index[(draw >= test_share) & (draw < test_share + val_share)], "split"] = "val"
    moved = []
    for split, share in (("test", test_share), ("val", val_share)):
        if share:
            moved += _complete_classes(frame, draw, split, group_column)
    frame.attrs["split_rescued"] = moved
    return frame


def _complete_classes(frame: pd.DataFrame, draw: pd.Series, split: str, group_column: str) -> list[str]:
    """Give a made split that drew no image of a class the train group of that class with the lowest draw.

    Only a split of a handful of groups can miss a class; moving one group keeps such a set
    trainable, and it is the one case in which growing the set can later move that group back.
    """
    moved = []
    pool = frame.loc[draw.index]
    for label in sorted(set(pool["label"])):
        if ((frame["split"] == split) & (frame["label"] == label)).any():
            continue
        candidates = pool[(frame.loc[draw.index, "split"] == "train") & (pool["label"] == label)]
        if candidates.empty:
            continue
        group = candidates[group_column].loc[draw[candidates.index].idxmin()]
        frame.loc[draw.index[(pool[group_column] == group).to_numpy()], "split"] = split
        moved.append(f"{split}: {group}")
    return moved


def split_balance(frame: pd.DataFrame, pool: pd.Series, made: Iterable[str]) -> dict[str, Any]:
    """How far the positive share of each split made here is from the share stratification would give.

    `pool` marks the rows the splits were carved from (no split given, or train). Stratification
    would give every split made from it the pool's positive share; `deviation` is the difference
    in that share, `positives` and `stratified` the counts.
    """
    made = [s for s in SPLITS if s in set(made)]
    rescued = list(frame.attrs.get("split_rescued", []))
    frame = frame[pool.reindex(frame.index, fill_value=False).to_numpy(dtype=bool)]
    overall = float(frame["label"].mean()) if len(frame) else 0.0
    rows = {}
    for split in (s for s in SPLITS if made):
        part = frame[frame["split"] == split]
        if part.empty:  # a split the set ships (e.g. its own test split) holds no pooled images
            continue
        share = float(part["label"].mean()) if len(part) else 0.0
        rows[split] = {
            "images": int(len(part)),
            "positives": int(part["label"].sum()),
            "stratified": round(overall * len(part), 1),
            "positive_share": share,
            "deviation": share - overall,
        }
    worst = max((abs(r["deviation"]) for r in rows.values()), default=0.0)
    return {
        "method": "keyed hash of the group" if made else "given by the dataset",
        "splits_made": made,
        "rescued": rescued,
        "pool_positive_share": overall,
        "splits": rows,
        "max_deviation": worst,
    }


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
    data = image_dataset(
        frame["path"].to_numpy(dtype=str),
        frame["label"].to_numpy(dtype=np.float32),
        profile.image_size,
        profile.batch_size,
        training=training,
        seed=seed,
        resize=profile.resize,
    )
    erase = profile.augmentation.border_erase
    if training and erase > 0:
        data = data.map(border_eraser(profile.image_size, profile.augmentation.border_band, erase, seed))
    return data


def band_mask(size: int, band: float) -> np.ndarray:
    """Boolean (size, size): True in the outer band `band` x size pixels wide (at least one) on every side."""
    width = max(1, int(round(band * size)))
    mask = np.ones((size, size), bool)
    mask[width : size - width, width : size - width] = False
    return mask


def load_images(paths: Sequence[str | Path], size: int, batch_size: int = 32, resize: str = "squash") -> np.ndarray:
    """Decode and resize files exactly as training and evaluation do; float32 (N, size, size, 3), 0-255.

    `resize` must be the model's (model.json): `squash` or `pad`.
    """
    from medcore.config import Profile

    if len(paths) == 0:
        return np.zeros((0, size, size, 3), np.float32)
    frame = pd.DataFrame({"path": [str(p) for p in paths], "label": np.zeros(len(paths), np.float32)})
    data = make_dataset(
        frame, Profile("gradcam", image_size=size, batch_size=batch_size, resize=resize), training=False, seed=0
    )
    return np.concatenate([images.numpy() for images, _ in data]).astype(np.float32)


def border_eraser(size: int, band: float, share: float, seed: int):
    """A batch map: each image's outer band (`band` of the side) becomes the image's mean, with probability `share`.

    Training only: the mitigation for the border shortcut the probes look for (medcore.assess.probes).
    """
    import tensorflow as tf


    mask = tf.constant(band_mask(size, band)[None, :, :, None])
    generator = tf.random.Generator.from_seed(seed)

    def erase(images, *rest):
        hit = generator.uniform((tf.shape(images)[0], 1, 1, 1)) < share
        mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
        return (tf.where(tf.logical_and(hit, mask), mean, images), *rest)

    return erase


def padded_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image inside a `size` square after `resize: pad` (tf.image.resize_with_pad)."""
    ratio = max(width / size, height / size)
    inner_h, inner_w = int(height / ratio), int(width / ratio)
    return (size - inner_h) // 2, (size - inner_w) // 2, inner_h, inner_w


def content_masks(paths: list[str], size: int, resize: str) -> np.ndarray:
    """Boolean (N, size, size): True where the square holds the image, False on `pad` padding (read from headers)."""
    from PIL import Image

    masks = np.ones((len(paths), size, size), dtype=bool)
    if resize != "pad":
        return masks
    for mask, path in zip(masks, paths):
        if _is_dicom_file(str(path)):
            from medcore.data.dicom import load_pixels

            height, width = load_pixels(str(path)).shape[:2]
        else:
            with Image.open(path) as image:
                width, height = image.size
        top, left, inner_h, inner_w = padded_box(height, width, size)
        mask[:] = False
        mask[top : top + inner_h, left : left + inner_w] = True
    return masks


def _is_dicom_file(path: str) -> bool:
    """Sniff the DICOM preamble (content, not the name, decides, as in validation)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False  # decode_image names the file when it fails


def image_dataset(
    paths: np.ndarray,
    targets: np.ndarray,
    size: int,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    sample_weights: np.ndarray | None = None,
    resize: str = "squash",
):
    """Return batches of (image, target[, sample weight]) with images decoded once, resized to `size`, cached.

    `resize` is `squash` (stretch to the square) or `pad` (keep the aspect ratio, pad with black).

    DICOM files go through medcore.data.dicom (rescale, VOI LUT or window, MONOCHROME1 inverted) as float32
    0-255, so their 10-16 bits are kept until this resize; other files through tf.io.decode_image.
    The cache holds the decoded, resized tensors, so DICOM is parsed in the first epoch only.
    """
    import tensorflow as tf

    if resize not in ("squash", "pad"):
        raise ValueError(f"resize must be 'squash' or 'pad', got {resize!r}")
    dicom = np.array([_is_dicom_file(str(p)) for p in paths], dtype=bool)

    def read_dicom(path):
        from medcore.data.dicom import load_pixels

        image = tf.numpy_function(load_pixels, [path], tf.float32, stateful=False)
        image.set_shape((None, None, 3))
        return image

    def decode(path):
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    def load(path, is_dicom, *rest):
        if not dicom.any():
            image = decode(path)  # the JPEG/PNG path stays exactly what it was
        elif dicom.all():
            image = read_dicom(path)
        else:
            image = tf.cond(is_dicom, lambda: read_dicom(path), lambda: tf.cast(decode(path), tf.float32))
        if resize == "pad":
            image = tf.image.resize_with_pad(image, size, size, antialias=True)
        else:
            image = tf.image.resize(image, (size, size), antialias=True)
        image.set_shape((size, size, 3))
        return (image, *rest)

    columns = (
        (paths, dicom, targets)
        if sample_weights is None
        else (paths, dicom, targets, sample_weights.astype(np.float32))
    )
    data = tf.data.Dataset.from_tensor_slices(columns)
    data = data.map(load, num_parallel_calls=os.cpu_count() or 1, deterministic=True).cache()
    if training:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(PREFETCH_BATCHES).with_options(input_options())


# Batches read ahead: the cached, decoded tensors are ready at once, so a step never waits for more.
PREFETCH_BATCHES = 2


def input_options():
    """tf.data options for every dataset that feeds a model: autotuning off.

    With autotuning on, each iterator runs a model thread that sleeps between tuning rounds, and Keras
    drops the epoch's iterator at every epoch end; on these VMs that drop often waited for the thread's
    sleep to end, with the process's threads all blocked and the CPU idle for up to tens of seconds an
    epoch (docs/decisions/0006-tf-data-autotune-off.md, issue 16). Decoding happens once (the cache), so fixed parallelism and a
    fixed read-ahead lose nothing that tuning would find.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options
