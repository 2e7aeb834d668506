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

__all__ = ["Augmentation", "Condition", "Profile", "Config", "load_config", "DEFAULT_CONFIG", "EvaluationSettings",
           "GradcamSettings"]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "conditions.yaml"
LAYOUTS = ("folders", "csv")
PRECISIONS = ("float32", "mixed_bfloat16")
EXECUTION_MODES = ("graph", "eager")
LR_SCHEDULES = ("constant", "cosine")

# --- validation policy -------------------------------------------------------------------------------
__all__ += ["CheckRule", "CHECKS", "POLICIES", "ValidationSettings"]
POLICIES = ("error", "drop", "warn")  # stop the run / drop the offending rows and warn / keep them and warn
LEAK_DROP_SIDES = ("heldout", "train")  # which side of a cross-split leak loses its rows under `drop`


@dataclass(frozen=True)
class CheckRule:
    """How one finding code may be handled: its safe default and the policies that make sense for it."""

    default: str  # one of POLICIES, or "info" for a finding that only describes the data
    allowed: tuple[str, ...]
    about: str


_UNUSABLE = ("error", "drop")  # a row that cannot be trained on can be dropped or stop the run, never kept
_FIXED = ("error",)

# Every finding code validation can report, in one table (as cleanvision keeps its issue types). It lives
# here rather than in medcore.validation because the config parser must reject unknown codes and
# policies, and loading the config (at DAG parse time) must not import pandas.
CHECKS: dict[str, CheckRule] = {
    # the dataset as a whole
    "dataset_unreadable": CheckRule("error", _FIXED, "dataset folder or manifest missing or unparsable"),
    "no_usable_images": CheckRule("error", _FIXED, "nothing left to train on"),
    "split_impossible": CheckRule("error", _FIXED, "val/test cannot be carved from train"),
    "class_too_small": CheckRule("error", _FIXED, "a split has fewer images of a class than min_per_class"),
    "class_imbalance": CheckRule("warn", ("error", "warn"), "a class is under min_class_fraction of a split"),
    "split_unknown": CheckRule("drop", POLICIES, "split value that is not train/val/test (warn: treat as unsplit)"),
    "group_missing": CheckRule("warn", ("error", "warn"), "blank group cell or no group_pattern match: own group"),
    # labels
    "label_missing": CheckRule("drop", _UNUSABLE, "blank, NaN or null label"),
    "label_fractional": CheckRule("drop", _UNUSABLE, "numeric label that is not an integer, e.g. 0.5"),
    "label_unknown": CheckRule("drop", _UNUSABLE, "label that is not positive, negative or excluded"),
    "label_float_coded": CheckRule("warn", POLICIES, "integral float label such as 1.0, cast to an integer"),
    # files
    "path_invalid": CheckRule("drop", _UNUSABLE, "empty or unusable manifest path; never opened"),
    "path_outside_dataset": CheckRule("drop", _UNUSABLE, "manifest path escaping the dataset; never opened"),
    "file_missing": CheckRule("drop", _UNUSABLE, "listed file does not exist"),
    "file_unreadable": CheckRule("drop", _UNUSABLE, "not a regular file, or reading it failed"),
    "image_empty": CheckRule("drop", _UNUSABLE, "zero-byte file"),
    "image_truncated": CheckRule("drop", _UNUSABLE, "JPEG/PNG cut short"),
    "image_corrupt": CheckRule("drop", _UNUSABLE, "image header, but the decoder fails"),
    "image_not_an_image": CheckRule("drop", _UNUSABLE, "bytes of no image format"),
    "image_format_unsupported": CheckRule("drop", _UNUSABLE, "an image the training loader cannot read (TIFF, DICOM)"),
    "image_too_large": CheckRule("drop", _UNUSABLE, "more pixels or bytes than validation will decode"),
    "image_too_small": CheckRule("drop", POLICIES, "shorter side under 16 px"),
    "image_blank": CheckRule("drop", POLICIES, "constant image with no contrast"),
    # duplicates and leakage
    "duplicate_conflicting_labels": CheckRule("error", POLICIES, "byte-identical files with different labels"),
    "duplicate_across_splits": CheckRule("error", POLICIES, "byte-identical files in two splits"),
    "duplicate_within_split": CheckRule("warn", POLICIES, "byte-identical files in one split (drop keeps one)"),
    "near_duplicate_across_splits": CheckRule("warn", POLICIES, "perceptually identical images in two splits"),
    "group_leakage": CheckRule("error", POLICIES, "a patient or group in two splits"),
    # descriptions of the data: they never take a policy
    "label_excluded": CheckRule("info", (), "class listed in `exclude`: left out of the task and counted"),
    "file_skipped": CheckRule("info", (), "file in a class folder without an image file name (e.g. .dcm)"),
    "image_encoding_unusual": CheckRule("info", (), "RGBA, 16-bit, palette, CMYK, very large, gray stored as colour"),
    "groups_unknown": CheckRule("info", (), "no group ids, so patient leakage cannot be checked"),
    "group_summary": CheckRule("info", (), "how many groups the images form"),
    "group_mixed_labels": CheckRule("info", (), "groups holding images of both classes"),
}
MIN_PER_CLASS_DEFAULT = {"train": 2, "val": 1, "test": 1}


@dataclass(frozen=True)
class ValidationSettings:
    """Dataset-check policy: what each finding code does, and the thresholds behind the checks."""

    policy: Mapping[str, str] = field(default_factory=lambda: {c: r.default for c, r in CHECKS.items()})
    min_per_class: Mapping[str, int] = field(default_factory=lambda: dict(MIN_PER_CLASS_DEFAULT))
    min_class_fraction: float = 0.05
    # Bits (of 256) in which two perceptual hashes may differ and still count as one image: re-encoding,
    # resizing and brightness changes stay under ~14; distinct radiographs of the real sets differ by 36+.
    near_duplicate_distance: int = 16
    leak_drop_from: str = "heldout"

    def for_condition(self, condition: "Condition") -> "ValidationSettings":
        """Return these settings with `condition`'s own overrides applied."""
        import dataclasses

        return dataclasses.replace(self, policy={**self.policy, **dict(condition.validation_policy)},
                                   leak_drop_from=condition.leak_drop_from or self.leak_drop_from)


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
    exclude: tuple[str, ...] = ()  # known other classes: left out of the task and counted, not flagged
    validation_policy: tuple[tuple[str, str], ...] = ()  # (code, policy) overrides; a tuple keeps this hashable
    leak_drop_from: str | None = None  # overrides the top-level validation.leak_drop_from
    nightly_policy: str | None = None  # overrides nightly.policy for this condition


@dataclass(frozen=True)
class Profile:
    """How hard to train: image size, schedule and augmentation."""

    name: str
    image_size: int = 128
    epochs: int = 10
    patience: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3
    # cosine: decay each phase from learning_rate towards 5 % of it by its last epoch, which converges
    # within a fixed nightly epoch budget instead of waiting for a plateau.
    lr_schedule: str = "constant"
    # Weight each class by the inverse of its share of the train split, so an imbalanced set (pneumonia
    # is 3:1) does not buy accuracy by favouring the majority class.
    class_weighting: bool = True
    # none, imagenet, champion (warm start), shared (the backbone `medcore pretrain` wrote), or a DenseNet121
    # (notop) weights file
    weights: str = "none"
    freeze_epochs: int = 0  # epochs with a frozen backbone before fine-tuning (for pretrained weights)
    fine_tune_learning_rate: float | None = None  # after unfreezing; default learning_rate / 10
    precision: str = "float32"
    intra_op_threads: int = 0  # 0: from MEDCORE_THREADS, else TensorFlow's default
    inter_op_threads: int = 0
    execution: str = "graph"  # eager skips the ~40 s graph trace, which only pays off on tiny runs
    max_images_per_split: int | None = None  # cap for smoke runs; None uses every image
    augmentation: Augmentation = field(default_factory=Augmentation)


THRESHOLD_RULES = ("youden", "sensitivity")
DELETION_BASELINES = ("blur", "mean")
DEFAULT_TIERS = (("excellent", 0.90), ("good", 0.80), ("moderate", 0.70))  # below the last: "insufficient"


@dataclass(frozen=True)
class EvaluationSettings:
    """How test figures are measured: bootstrap intervals, threshold rule, quality tiers."""

    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    threshold_rule: str = "youden"  # or "sensitivity": the highest threshold reaching target_sensitivity on val
    target_sensitivity: float = 0.90
    calibration_bins: int = 10
    # A bootstrap of a handful of patients says nothing (two patients give a zero-width interval), so
    # below this many independent test units (patients, else images) of either class no tier is given.
    min_per_class: int = 10
    # Tier name -> minimum lower bound of the ROC AUC interval, best tier first. Judged on the lower
    # bound so a lucky small test split cannot earn a tier its uncertainty does not support.
    tiers: tuple[tuple[str, float], ...] = DEFAULT_TIERS


@dataclass(frozen=True)
class GradcamSettings:
    """Grad-CAM target, overlays, and the deletion test of faithfulness."""

    layer: str = "relu"
    samples: int = 4  # overlays per kind (TP, TN, FP, FN)
    batch_size: int = 32
    deletion_images: int = 32  # highest-scoring test images the deletion curve is measured on
    deletion_steps: int = 10
    deletion_baseline: str = "blur"  # what deleted pixels become: the blurred image or its mean
    seed: int = 0  # seeds the random-map baseline


# --- champion registry and report e-mail -----------------------------------------------------------
__all__ += ["RegistrySettings", "NotifySettings", "GATE_METRICS", "DEFAULT_GATES"]
# Figures a gate may name, each "higher is better"; `<metric>_low` gates the lower bound of its interval.
GATE_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc")
DEFAULT_GATES = (("roc_auc", 0.70), ("recall", 0.50), ("specificity", 0.50))


@dataclass(frozen=True)
class RegistrySettings:
    """Where the champion of each condition lives, and what a model must show to replace it."""

    root: Path | None = None  # set by load_config; None (a hand-built Config) means `registry` beside the config
    gates: tuple[tuple[str, float], ...] = DEFAULT_GATES  # (figure, minimum) on the candidate's test split
    # How far the lower bound of the paired interval of (challenger - best) selection ROC AUC may fall
    # below zero, where "best" is the best figure any champion reached on the current selection images.
    margin: float = 0.02
    history: int = 20  # decisions kept per condition
    # Lowest evaluation quality tier a champion may have. The tier also demands enough test patients, which
    # no point-estimate gate checks; None leaves it out (tiny demo and test runs could never promote).
    min_tier: str | None = None


# --- nights that build on each other (issue 15) -------------------------------------------------------
__all__ += ["NightlySettings", "TaskSettings", "NIGHTLY_POLICIES"]
NIGHTLY_POLICIES = ("auto", "retrain", "continue")  # auto: continue once a champion exists, else retrain


@dataclass(frozen=True)
class NightlySettings:
    """How each night starts: from scratch, or from the champion; and when it need not train at all."""

    policy: str = "auto"  # one of NIGHTLY_POLICIES; a condition's `nightly_policy` overrides it
    continue_epochs: float = 0.5  # a warm start trains this share of the profile's epochs (at least one)
    skip_unchanged: bool = True  # no training when data, condition config and code all equal the champion's


@dataclass(frozen=True)
class TaskSettings:
    """Airflow task retries and timeouts: a hung task ends, is retried, and the run still reports."""

    retries: int = 2
    retry_delay_seconds: int = 60
    validate_minutes: float = 30.0
    train_minutes_fixed: float = 10.0  # start-up and the first step's graph trace
    train_minutes_per_epoch: float = 15.0  # times the most epochs any profile trains
    evaluate_minutes: float = 30.0
    gradcam_minutes: float = 30.0
    report_minutes: float = 15.0  # promote, report, notify and verdict each

    def train_minutes(self, profiles: Mapping[str, "Profile"]) -> float:
        """The training timeout: fixed start-up plus the per-epoch allowance for the longest profile."""
        epochs = max((p.epochs for p in profiles.values()), default=1)
        return self.train_minutes_fixed + self.train_minutes_per_epoch * epochs


@dataclass(frozen=True)
class NotifySettings:
    """Who gets the report by e-mail, through which Airflow SMTP connection."""

    conn_id: str = "smtp_default"
    recipients: tuple[str, ...] = ()  # none: the notify task records "skipped" and sends nothing
    from_email: str | None = None  # default: the connection's `from_email` extra, else medcore@localhost
    max_images: int = 8  # Grad-CAM images attached (and shown inline); report.md is always attached
    report_url: str | None = None  # the Airflow UI's base URL, so links in the e-mail open the report page


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
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    gradcam: GradcamSettings = field(default_factory=GradcamSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    nightly: NightlySettings = field(default_factory=NightlySettings)
    tasks: TaskSettings = field(default_factory=TaskSettings)

    def validation_for(self, condition: Condition) -> ValidationSettings:
        """Return the validation settings for `condition`: the top-level ones plus its own overrides."""
        return self.validation.for_condition(condition)

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
                           "split_column", "group_column", "group_pattern", "exclude", "validation_policy",
                           "leak_drop_from", "nightly_policy"}, key)
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
        exclude=r.labels(raw, "exclude", key) if raw.get("exclude") is not None else (),
        validation_policy=tuple(_policies(r, raw.get("validation_policy"), f"{key}.validation_policy").items()),
        leak_drop_from=r.text(raw, "leak_drop_from", key, default=None, choices=LEAK_DROP_SIDES),
        nightly_policy=r.text(raw, "nightly_policy", key, default=None, choices=NIGHTLY_POLICIES),
    )
    overlap = set(condition.exclude) & (set(condition.positive) | set(condition.negative))
    if overlap:
        raise r.fail(f"{key}.exclude", f"label {sorted(overlap)[0]!r} is also listed as positive or negative")
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


def _weights(r: _Reader, raw: Mapping[str, Any], key: str) -> str:
    """`none`, `imagenet`, `champion`, `shared`, or a weights file resolved against the config file's folder."""
    value = r.text(raw, "weights", key, default="none")
    if value in ("none", "imagenet", "champion", "shared"):
        return value
    path = (r.path.parent / Path(value).expanduser()).resolve()
    if not path.is_file():
        raise r.fail(f"{key}.weights",
                     f"must be none, imagenet, champion, shared or an existing weights file; {path} not found")
    return str(path)


def _policies(r: _Reader, raw: Any, key: str) -> dict[str, str]:
    """Parse a `code: policy` mapping, rejecting unknown codes and policies a code cannot take."""
    policies = {}
    for code, value in r.mapping(raw, key).items():
        rule = CHECKS.get(str(code))
        if rule is None:
            raise r.fail(f"{key}.{code}", f"unknown finding code (known: {', '.join(sorted(CHECKS))})")
        if not rule.allowed:
            raise r.fail(f"{key}.{code}", "describes the data and takes no policy")
        policy = r.text({code: value}, code, key)
        if policy not in rule.allowed:
            raise r.fail(f"{key}.{code}", f"must be one of {', '.join(rule.allowed)}, got {policy!r}")
        policies[str(code)] = policy
    return policies


def _validation(r: _Reader, raw: Any) -> ValidationSettings:
    key = "validation"
    raw = r.mapping(raw, key)
    r.reject_unknown(raw, {"policy", "min_per_class", "min_class_fraction", "near_duplicate_distance",
                           "leak_drop_from"}, key)
    minimum = r.mapping(raw.get("min_per_class"), f"{key}.min_per_class")
    r.reject_unknown(minimum, set(MIN_PER_CLASS_DEFAULT), f"{key}.min_per_class")
    defaults = ValidationSettings()
    return ValidationSettings(
        policy={**defaults.policy, **_policies(r, raw.get("policy"), f"{key}.policy")},
        min_per_class={split: r.number(minimum, split, f"{key}.min_per_class", n, int, 1, 10**6)
                       for split, n in MIN_PER_CLASS_DEFAULT.items()},
        min_class_fraction=r.number(raw, "min_class_fraction", key, defaults.min_class_fraction, float, 0.0, 0.5),
        near_duplicate_distance=r.number(raw, "near_duplicate_distance", key, defaults.near_duplicate_distance,
                                         int, 0, 128),
        leak_drop_from=r.text(raw, "leak_drop_from", key, default=defaults.leak_drop_from, choices=LEAK_DROP_SIDES),
    )


def _flag(r: _Reader, raw: dict, name: str, key: str, default: bool) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise r.fail(f"{key}.{name}", f"must be true or false, got {value!r}")
    return value


def _profile(r: _Reader, name: str, raw: Any) -> Profile:
    key = f"profiles.{name}"
    raw = r.mapping(raw, key)
    r.reject_unknown(raw, {"image_size", "epochs", "patience", "batch_size", "learning_rate", "lr_schedule",
                           "class_weighting", "weights", "freeze_epochs", "fine_tune_learning_rate", "precision", "intra_op_threads",
                           "inter_op_threads", "execution", "max_images_per_split", "augmentation"}, key)
    aug_key = f"{key}.augmentation"
    aug_raw = r.mapping(raw.get("augmentation"), aug_key)
    r.reject_unknown(aug_raw, {"rotation", "zoom", "contrast", "horizontal_flip"}, aug_key)
    flip = _flag(r, aug_raw, "horizontal_flip", aug_key, False)
    return Profile(
        name=name,
        image_size=r.number(raw, "image_size", key, 128, int, 32, 1024),
        epochs=r.number(raw, "epochs", key, 10, int, 1, 1000),
        patience=r.number(raw, "patience", key, 3, int, 0, 1000),
        batch_size=r.number(raw, "batch_size", key, 32, int, 1, 4096),
        learning_rate=r.number(raw, "learning_rate", key, 1e-3, float, 1e-8, 1.0),
        lr_schedule=r.text(raw, "lr_schedule", key, default="constant", choices=LR_SCHEDULES),
        class_weighting=_flag(r, raw, "class_weighting", key, True),
        weights=_weights(r, raw, key),
        freeze_epochs=r.number(raw, "freeze_epochs", key, 0, int, 0, 1000),
        fine_tune_learning_rate=r.number(raw, "fine_tune_learning_rate", key, None, float, 1e-9, 1.0),
        precision=r.text(raw, "precision", key, default="float32", choices=PRECISIONS),
        intra_op_threads=r.number(raw, "intra_op_threads", key, 0, int, 0, 256),
        inter_op_threads=r.number(raw, "inter_op_threads", key, 0, int, 0, 256),
        execution=r.text(raw, "execution", key, default="graph", choices=EXECUTION_MODES),
        max_images_per_split=r.number(raw, "max_images_per_split", key, None, int, 4, 10**9),
        augmentation=Augmentation(
            rotation=r.number(aug_raw, "rotation", aug_key, 0.0, float, 0.0, 0.5),
            zoom=r.number(aug_raw, "zoom", aug_key, 0.0, float, 0.0, 0.9),
            contrast=r.number(aug_raw, "contrast", aug_key, 0.0, float, 0.0, 0.9),
            horizontal_flip=flip,
        ),
    )


def _evaluation(r: _Reader, raw: Any) -> EvaluationSettings:
    key = "evaluation"
    raw = r.mapping(raw, key)
    r.reject_unknown(raw, {"bootstrap_resamples", "confidence", "threshold_rule", "target_sensitivity",
                           "calibration_bins", "min_per_class", "tiers"}, key)
    tiers_key = f"{key}.tiers"
    tiers_raw = r.mapping(raw.get("tiers"), tiers_key)
    defaults = dict(DEFAULT_TIERS)
    r.reject_unknown(tiers_raw, set(defaults), tiers_key)
    tiers = tuple((name, r.number(tiers_raw, name, tiers_key, low_default, float, 0.5, 1.0))
                  for name, low_default in DEFAULT_TIERS)
    for (better, high), (worse, low) in zip(tiers, tiers[1:]):
        if not high > low:
            raise r.fail(f"{tiers_key}.{better}", f"must be above {worse} ({low}), got {high}")
    return EvaluationSettings(
        # Fewer than 1000 resamples make the 2.5th percentile itself too noisy to report.
        bootstrap_resamples=r.number(raw, "bootstrap_resamples", key, 1000, int, 1000, 100_000),
        confidence=r.number(raw, "confidence", key, 0.95, float, 0.5, 0.999),
        threshold_rule=r.text(raw, "threshold_rule", key, default="youden", choices=THRESHOLD_RULES),
        target_sensitivity=r.number(raw, "target_sensitivity", key, 0.90, float, 0.01, 1.0),
        calibration_bins=r.number(raw, "calibration_bins", key, 10, int, 2, 100),
        min_per_class=r.number(raw, "min_per_class", key, 10, int, 1, 100_000),
        tiers=tiers,
    )


def _gradcam(r: _Reader, raw: Any, seed: int) -> GradcamSettings:
    key = "gradcam"
    raw = r.mapping(raw, key)
    r.reject_unknown(raw, {"layer", "samples", "batch_size", "deletion_images", "deletion_steps",
                           "deletion_baseline", "seed"}, key)
    return GradcamSettings(
        layer=r.text(raw, "layer", key, default="relu"),
        samples=r.number(raw, "samples", key, 4, int, 1, 64),
        batch_size=r.number(raw, "batch_size", key, 32, int, 1, 1024),
        deletion_images=r.number(raw, "deletion_images", key, 32, int, 1, 1024),
        deletion_steps=r.number(raw, "deletion_steps", key, 10, int, 2, 100),
        deletion_baseline=r.text(raw, "deletion_baseline", key, default="blur", choices=DELETION_BASELINES),
        seed=r.number(raw, "seed", key, seed, int, 0, 2**31 - 1),
    )


def _registry(r: _Reader, raw: Any, root: Path) -> RegistrySettings:
    key = "registry"
    raw = r.mapping(raw, key)
    r.reject_unknown(raw, {"root", "gates", "margin", "history", "min_tier"}, key)
    gates_key = f"{key}.gates"
    # A `gates` mapping replaces the defaults as a whole (a null value drops one gate inherited via
    # `extends`), so what a model must pass is always what the file says.
    gates_raw = r.mapping(raw["gates"], gates_key) if "gates" in raw else dict(DEFAULT_GATES)
    allowed = set(GATE_METRICS) | {f"{m}_low" for m in GATE_METRICS}
    r.reject_unknown(gates_raw, allowed, gates_key)
    gates = tuple((str(name), r.number(gates_raw, name, gates_key, None, float, 0.0, 1.0))
                  for name in gates_raw if gates_raw[name] is not None)
    return RegistrySettings(
        root=root,
        gates=gates,
        margin=r.number(raw, "margin", key, 0.02, float, 0.0, 0.5),
        history=r.number(raw, "history", key, 20, int, 1, 10_000),
        min_tier=r.text(raw, "min_tier", key, default=None,
                        choices=tuple(name for name, _ in DEFAULT_TIERS) + ("insufficient",)),
    )


def _nightly(r: _Reader, raw: Any) -> NightlySettings:
    key = "nightly"
    raw = r.mapping(raw, key)
    r.reject_unknown(raw, {"policy", "continue_epochs", "skip_unchanged"}, key)
    return NightlySettings(policy=r.text(raw, "policy", key, default="auto", choices=NIGHTLY_POLICIES),
                           continue_epochs=r.number(raw, "continue_epochs", key, 0.5, float, 0.01, 1.0),
                           skip_unchanged=_flag(r, raw, "skip_unchanged", key, True))


def _tasks(r: _Reader, raw: Any) -> TaskSettings:
    key = "tasks"
    raw = r.mapping(raw, key)
    defaults = TaskSettings()
    minutes = ("validate_minutes", "train_minutes_fixed", "train_minutes_per_epoch", "evaluate_minutes",
               "gradcam_minutes", "report_minutes")
    r.reject_unknown(raw, {"retries", "retry_delay_seconds", *minutes}, key)
    return TaskSettings(retries=r.number(raw, "retries", key, defaults.retries, int, 0, 20),
                        retry_delay_seconds=r.number(raw, "retry_delay_seconds", key, defaults.retry_delay_seconds,
                                                     int, 0, 86_400),
                        **{name: r.number(raw, name, key, getattr(defaults, name), float, 0.01, 24 * 60)
                           for name in minutes})


def _notify(r: _Reader, raw: Any) -> NotifySettings:
    key = "notify"
    raw = r.mapping(raw, key)
    r.reject_unknown(raw, {"conn_id", "recipients", "from_email", "max_images", "report_url"}, key)
    recipients = raw.get("recipients") or []
    if isinstance(recipients, str):
        recipients = [recipients]
    if not isinstance(recipients, list) or not all(isinstance(a, str) and "@" in a for a in recipients):
        raise r.fail(f"{key}.recipients", f"must be a list of e-mail addresses, got {recipients!r}")
    return NotifySettings(
        conn_id=r.text(raw, "conn_id", key, default="smtp_default"),
        recipients=tuple(a.strip() for a in recipients),
        from_email=r.text(raw, "from_email", key, default=None),
        max_images=r.number(raw, "max_images", key, 8, int, 0, 100),
        report_url=r.text(raw, "report_url", key, default=None),
    )


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the YAML config at `path` (default: `$MEDCORE_CONFIG` or `conditions.yaml`).

    `MEDCORE_DATA_ROOT` and `MEDCORE_RUNS_ROOT` in the environment override `data_root` and
    `runs_root`. Raises ConfigError naming the file and key of the first problem found.
    """
    path = Path(path or os.environ.get("MEDCORE_CONFIG") or DEFAULT_CONFIG).resolve()
    raw, origins = _read_yaml(path)
    r = _Reader(path)
    r.reject_unknown(raw, {"data_root", "runs_root", "seed", "split", "gradcam", "evaluation", "conditions", "profiles",
                           "validation", "registry", "notify", "nightly", "tasks"}, "(top level)")

    def resolved(key: str, default: str, env: str) -> Path:
        if os.environ.get(env):
            return Path(os.environ[env]).expanduser().resolve()
        value = r.text(raw, key, "(top level)", default=default)
        return (origins.get(key, path.parent) / Path(value).expanduser()).resolve()

    split = r.mapping(raw.get("split"), "split")
    r.reject_unknown(split, {"val_fraction", "test_fraction"}, "split")
    gradcam = r.mapping(raw.get("gradcam"), "gradcam")
    r.reject_unknown(gradcam, {"layer", "samples", "batch_size", "deletion_images", "deletion_steps",
                               "deletion_baseline", "seed"}, "gradcam")
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
        evaluation=_evaluation(r, raw.get("evaluation")),
        gradcam=_gradcam(r, raw.get("gradcam"), r.number(raw, "seed", "(top level)", 1337, int, 0, 2**31 - 1)),
        validation=_validation(r, raw.get("validation")),
        registry=_registry(r, raw.get("registry"), _registry_root(r, raw, path)),
        notify=_notify(r, raw.get("notify")),
        nightly=_nightly(r, raw.get("nightly")),
        tasks=_tasks(r, raw.get("tasks")),
    )
    return config


def _registry_root(r: _Reader, raw: Mapping[str, Any], path: Path) -> Path:
    """`$MEDCORE_REGISTRY_ROOT`, else `registry.root` (default `registry`) relative to the loaded config file.

    Relative to the file loaded, not to one it extends: configs/demo.yaml then keeps its own
    registry (configs/registry), so a demo model never becomes the champion of a real run.
    """
    if os.environ.get("MEDCORE_REGISTRY_ROOT"):
        return Path(os.environ["MEDCORE_REGISTRY_ROOT"]).expanduser().resolve()
    section = r.mapping(raw.get("registry"), "registry")
    return (path.parent / Path(r.text(section, "root", "registry", default="registry")).expanduser()).resolve()
