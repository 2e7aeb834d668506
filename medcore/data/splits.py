"""Labels and splits: what each raw label means for a condition, and train/val/test drawn by group."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from medcore.config import Condition, canonical_label
from medcore.errors import DataError

__all__ = [
    "SPLITS",
    "parse_label",
    "classify_labels",
    "label_manifest",
    "split_draw",
    "assign_splits",
    "split_balance",
    "cap_per_split",
]

SPLITS = ("train", "val", "test")
_MISSING_LABELS = {"", "nan", "none", "null", "na", "n/a"}
_PLAIN_INT = re.compile(r"[+-]?\d+")


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
