"""The typed, validated configuration: conditions, profiles and run settings from one YAML file.

Loaded once per process through `load_config`; every error names the file and the key, so a typo
in `conditions.yaml` is a one-line message instead of a KeyError deep inside training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from medcore.errors import ConfigError

__all__ = ["Augmentation", "Condition", "Profile", "Config", "load_config", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "conditions.yaml"
LAYOUTS = ("folders", "csv")
WEIGHT_SOURCES = ("none",)
EXECUTION_MODES = ("graph", "eager")


@dataclass(frozen=True)
class Augmentation:
    """Anatomy-safe random transforms applied during training only."""

    rotation: float = 0.0  # fraction of a full turn
    zoom: float = 0.0
    contrast: float = 0.0
    horizontal_flip: bool = False  # never for chest films: the heart's side matters


@dataclass(frozen=True)
class Condition:
    """One binary task: which dataset folder, how it is laid out, which labels are positive."""

    name: str
    dataset: str
    layout: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    manifest: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    split_column: str | None = "split"
    group_column: str | None = None
    group_pattern: str | None = None  # regex on the file name; group 1 (or the match) is the group


@dataclass(frozen=True)
class Profile:
    """How hard to train: image size, schedule and augmentation."""

    name: str
    image_size: int = 128
    epochs: int = 10
    patience: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3
    weights: str = "none"
    execution: str = "graph"  # eager skips the ~40 s graph trace, which only pays off on tiny runs
    max_images_per_split: int | None = None  # cap for smoke runs; None uses every image
    augmentation: Augmentation = field(default_factory=Augmentation)


@dataclass(frozen=True)
class Config:
    """Everything a run needs to know, with paths already resolved."""

    path: Path
    data_root: Path
    runs_root: Path
    seed: int
    val_fraction: float
    test_fraction: float
    gradcam_layer: str
    gradcam_samples: int
    conditions: Mapping[str, Condition]
    profiles: Mapping[str, Profile]

    def dataset_dir(self, condition: Condition) -> Path:
        """Return the folder that holds `condition`'s images."""
        return self.data_root / condition.dataset


class _Reader:
    """Pulls typed values out of nested YAML mappings, naming file and key in every error."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {type(value).__name__}")
        return value

    def reject_unknown(self, raw: Mapping[str, Any], allowed: set[str], key: str) -> None:
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def number(self, raw: Mapping[str, Any], name: str, key: str, default: Any, kind: type,
               low: float | None = None, high: float | None = None) -> Any:
        value = raw.get(name, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
            raise self.fail(f"{key}.{name}", f"must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        value = kind(value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(f"{key}.{name}", f"must be between {low} and {high}, got {value}")
        return value

    def text(self, raw: Mapping[str, Any], name: str, key: str, default: Any = ..., choices: tuple[str, ...] = ()) -> Any:
        if name not in raw or raw[name] is None:
            if default is ...:
                raise self.fail(f"{key}.{name}", "is required")
            return default
        value = raw[name]
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise self.fail(f"{key}.{name}", f"must be text, got {value!r}")
        value = str(value)
        if choices and value not in choices:
            raise self.fail(f"{key}.{name}", f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def labels(self, raw: Mapping[str, Any], name: str, key: str) -> tuple[str, ...]:
        value = raw.get(name)
        if not isinstance(value, list) or not value:
            raise self.fail(f"{key}.{name}", "must be a non-empty list of labels")
        return tuple(canonical_label(v) for v in value)


def canonical_label(value: Any) -> str:
    """Return a label as text, with integral floats written as ints ("1.0" and 1 both give "1")."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, Path]]:
    """Read `path` and whatever it `extends`, returning the merged mapping and where each path key came from."""
    if path in seen:
        raise ConfigError(f"{path}: extends: circular reference")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    # Relative paths are relative to the file that wrote them, so remember each key's origin.
    origins = {key: path.parent for key in ("data_root", "runs_root") if key in raw}
    parent = raw.pop("extends", None)
    if parent is None:
        return raw, origins
    base, base_origins = _read_yaml((path.parent / str(parent)).resolve(), seen + (path,))
    return _deep_merge(base, raw), {**base_origins, **origins}


def _condition(r: _Reader, name: str, raw: Any) -> Condition:
    key = f"conditions.{name}"
    raw = r.mapping(raw, key)
    r.reject_unknown(raw, {"dataset", "layout", "positive", "negative", "manifest", "image_column", "label_column",
                           "split_column", "group_column", "group_pattern"}, key)
    layout = r.text(raw, "layout", key, choices=LAYOUTS)
    condition = Condition(
        name=name,
        dataset=r.text(raw, "dataset", key),
        layout=layout,
        positive=r.labels(raw, "positive", key),
        negative=r.labels(raw, "negative", key),
        manifest=r.text(raw, "manifest", key, default=None if layout == "folders" else ...),
        image_column=r.text(raw, "image_column", key, default="image"),
        label_column=r.text(raw, "label_column", key, default="label"),
        split_column=r.text(raw, "split_column", key, default="split"),
        group_column=r.text(raw, "group_column", key, default=None),
        group_pattern=r.text(raw, "group_pattern", key, default=None),
    )
    both = set(condition.positive) & set(condition.negative)
    if both:
        raise r.fail(f"{key}.positive", f"label {sorted(both)[0]!r} is listed as both positive and negative")
    if condition.group_pattern is not None:
        import re

        try:
            re.compile(condition.group_pattern)
        except re.error as exc:
            raise r.fail(f"{key}.group_pattern", f"invalid regular expression: {exc}") from None
    return condition


def _profile(r: _Reader, name: str, raw: Any) -> Profile:
    key = f"profiles.{name}"
    raw = r.mapping(raw, key)
    r.reject_unknown(raw, {"image_size", "epochs", "patience", "batch_size", "learning_rate", "weights",
                           "execution", "max_images_per_split", "augmentation"}, key)
    aug_key = f"{key}.augmentation"
    aug_raw = r.mapping(raw.get("augmentation"), aug_key)
    r.reject_unknown(aug_raw, {"rotation", "zoom", "contrast", "horizontal_flip"}, aug_key)
    flip = aug_raw.get("horizontal_flip", False)
    if not isinstance(flip, bool):
        raise r.fail(f"{aug_key}.horizontal_flip", f"must be true or false, got {flip!r}")
    return Profile(
        name=name,
        image_size=r.number(raw, "image_size", key, 128, int, 32, 1024),
        epochs=r.number(raw, "epochs", key, 10, int, 1, 1000),
        patience=r.number(raw, "patience", key, 3, int, 0, 1000),
        batch_size=r.number(raw, "batch_size", key, 32, int, 1, 4096),
        learning_rate=r.number(raw, "learning_rate", key, 1e-3, float, 1e-8, 1.0),
        weights=r.text(raw, "weights", key, default="none", choices=WEIGHT_SOURCES),
        execution=r.text(raw, "execution", key, default="graph", choices=EXECUTION_MODES),
        max_images_per_split=r.number(raw, "max_images_per_split", key, None, int, 4, 10**9),
        augmentation=Augmentation(
            rotation=r.number(aug_raw, "rotation", aug_key, 0.0, float, 0.0, 0.5),
            zoom=r.number(aug_raw, "zoom", aug_key, 0.0, float, 0.0, 0.9),
            contrast=r.number(aug_raw, "contrast", aug_key, 0.0, float, 0.0, 0.9),
            horizontal_flip=flip,
        ),
    )


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the YAML config at `path` (default: `$MEDCORE_CONFIG` or `conditions.yaml`).

    `MEDCORE_DATA_ROOT` and `MEDCORE_RUNS_ROOT` in the environment override `data_root` and
    `runs_root`. Raises ConfigError naming the file and key of the first problem found.
    """
    path = Path(path or os.environ.get("MEDCORE_CONFIG") or DEFAULT_CONFIG).resolve()
    raw, origins = _read_yaml(path)
    r = _Reader(path)
    r.reject_unknown(raw, {"data_root", "runs_root", "seed", "split", "gradcam", "conditions", "profiles"}, "(top level)")

    def resolved(key: str, default: str, env: str) -> Path:
        if os.environ.get(env):
            return Path(os.environ[env]).expanduser().resolve()
        value = r.text(raw, key, "(top level)", default=default)
        return (origins.get(key, path.parent) / Path(value).expanduser()).resolve()

    split = r.mapping(raw.get("split"), "split")
    r.reject_unknown(split, {"val_fraction", "test_fraction"}, "split")
    gradcam = r.mapping(raw.get("gradcam"), "gradcam")
    r.reject_unknown(gradcam, {"layer", "samples"}, "gradcam")
    conditions = r.mapping(raw.get("conditions"), "conditions")
    profiles = r.mapping(raw.get("profiles"), "profiles")
    if not conditions:
        raise r.fail("conditions", "at least one condition is required")
    if not profiles:
        raise r.fail("profiles", "at least one profile is required")
    config = Config(
        path=path,
        data_root=resolved("data_root", "data", "MEDCORE_DATA_ROOT"),
        runs_root=resolved("runs_root", "runs", "MEDCORE_RUNS_ROOT"),
        seed=r.number(raw, "seed", "(top level)", 1337, int, 0, 2**31 - 1),
        val_fraction=r.number(split, "val_fraction", "split", 0.15, float, 0.01, 0.5),
        test_fraction=r.number(split, "test_fraction", "split", 0.15, float, 0.01, 0.5),
        gradcam_layer=r.text(gradcam, "layer", "gradcam", default="relu"),
        gradcam_samples=r.number(gradcam, "samples", "gradcam", 4, int, 1, 64),
        conditions={str(n): _condition(r, str(n), c) for n, c in conditions.items()},
        profiles={str(n): _profile(r, str(n), p) for n, p in profiles.items()},
    )
    return config
