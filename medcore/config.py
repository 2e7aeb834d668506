"""The typed, validated configuration: conditions, profiles and run settings from one YAML file.

Every setting is declared once below, as a pydantic field with its default, bounds and a one-line
description; the README's config reference is generated from these declarations
(`python -m medcore.config --readme README.md`). Loaded once per process through `load_config`;
every error is one line naming the file and the key path, so a typo in `conditions.yaml` is a
message instead of a KeyError deep inside training.

The classes are pydantic *dataclasses* (not BaseModels) so that code building a `Profile("p",
image_size=32)` by hand, or a variant with `dataclasses.replace`, keeps working and is validated too.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from medcore.errors import ConfigError

__all__ = [
    "Augmentation",
    "Progressive",
    "Condition",
    "Profile",
    "Config",
    "load_config",
    "DEFAULT_CONFIG",
    "EvaluationSettings",
    "GradcamSettings",
    "ProbeSettings",
    "SplitSettings",
    "Tiers",
    "canonical_label",
    "config_reference",
]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "conditions.yaml"
# Unknown keys are errors (a typo must not silently fall back to a default); frozen: loaded once, shared.
_SETTINGS = ConfigDict(extra="forbid")
_SEED_MAX = 2**31 - 1


def _integer(default: Any, low: int, high: int, doc: str, **extra: Any) -> Any:
    """A whole-number setting: true/false, 64.0 and "64" are rejected, not coerced."""
    return Field(default, ge=low, le=high, strict=True, description=doc, **extra)


def _number(default: Any, low: float, high: float, doc: str, **extra: Any) -> Any:
    """A real-number setting: integers are accepted, NaN and infinities are not."""
    return Field(default, ge=low, le=high, strict=True, allow_inf_nan=False, description=doc, **extra)


def _flag(default: bool, doc: str) -> Any:
    return Field(default, strict=True, description=doc)


def _text(default: Any, doc: str, **extra: Any) -> Any:
    return Field(default, strict=True, description=doc, **extra)


def _choice(default: Any, doc: str) -> Any:
    """One of the `Literal` values its annotation lists."""
    return Field(default, description=doc)


def _problem(key: str, message: str) -> PydanticCustomError:
    """A cross-field error pinned to `key` below the object being validated (see `_message`)."""
    return PydanticCustomError("medcore_key", "{message}", {"key": key, "message": message})


# --- validation policy -------------------------------------------------------------------------------
__all__ += [
    "CheckRule",
    "CHECKS",
    "DEFAULT_FIX",
    "POLICIES",
    "ValidationSettings",
    "SplitMinimum",
    "MIN_PER_CLASS_DEFAULT",
]
POLICIES = ("error", "drop", "warn")  # stop the run / drop the offending rows and warn / keep them and warn
LeakSide = Literal["heldout", "train"]  # which side of a cross-split leak loses its rows under `drop`
NightlyPolicy = Literal["auto", "retrain", "continue"]  # auto: continue once a champion exists, else retrain
WarmStartMethod = Literal["continue", "shrink_perturb"]  # medcore.model.warmstart
BatchNormHandling = Literal["reestimate", "keep"]


# What the report suggests for a finding whose rule names no fix of its own.
DEFAULT_FIX = "fix the rows named in validation.json, or change this finding's policy in conditions.yaml"


@dataclasses.dataclass(frozen=True)
class CheckRule:
    """How one finding code may be handled: its safe default, the policies that make sense, and how to fix it."""

    default: str  # one of POLICIES, or "info" for a finding that only describes the data
    allowed: tuple[str, ...]
    about: str
    fix: str = DEFAULT_FIX  # the report's advice when this finding stops a model


_UNUSABLE = ("error", "drop")  # a row that cannot be trained on can be dropped or stop the run, never kept
_FIXED = ("error",)

# Every finding code validation can report, in one table (as cleanvision keeps its issue types), with the
# fix the report suggests when it stops a model. It lives here rather than in medcore.data.validation because
# the config parser must reject unknown codes and policies, and loading the config (at DAG parse time)
# must not import pandas. Adding a finding code is one row here plus the check that reports it.
CHECKS: dict[str, CheckRule] = {
    # the dataset as a whole
    "dataset_unreadable": CheckRule(
        "error",
        _FIXED,
        "dataset folder or manifest missing or unparsable",
        "check `data_root` (or MEDCORE_DATA_ROOT) and the condition's `dataset` and `manifest`",
    ),
    "no_usable_images": CheckRule(
        "error",
        _FIXED,
        "nothing left to train on",
        "point the condition at a folder holding readable images of both classes",
    ),
    "split_impossible": CheckRule(
        "error",
        _FIXED,
        "val/test cannot be carved from train",
        "add images, or lower `split.val_fraction` / `split.test_fraction`",
    ),
    "class_too_small": CheckRule(
        "error",
        _FIXED,
        "a split has fewer images of a class than min_per_class",
        "add images of the short class, or lower `validation.min_per_class` (smoke tests only)",
    ),
    "class_imbalance": CheckRule(
        "warn",
        ("error", "warn"),
        "a class is under min_class_fraction of a split",
        "collect more images of the rare class, or set the policy of `class_imbalance` to warn",
    ),
    "split_unknown": CheckRule("drop", POLICIES, "split value that is not train/val/test (warn: treat as unsplit)"),
    "group_missing": CheckRule(
        "warn",
        ("error", "warn"),
        "blank group cell or no group_pattern match: own group",
        "fill in the group column or fix `group_pattern`, or set the policy of this code to warn",
    ),
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
    "image_format_unsupported": CheckRule(
        "drop", _UNUSABLE, "an image the training loader cannot read (TIFF, JPEG 2000)"
    ),
    "image_too_large": CheckRule("drop", _UNUSABLE, "more pixels or bytes than validation will decode"),
    "image_too_small": CheckRule("drop", POLICIES, "shorter side under 16 px"),
    "image_blank": CheckRule("drop", POLICIES, "constant image with no contrast"),
    # duplicates and leakage
    "duplicate_conflicting_labels": CheckRule(
        "error",
        POLICIES,
        "byte-identical files with different labels",
        "correct the labels at the source, or set the policy of this code to drop",
    ),
    "duplicate_across_splits": CheckRule(
        "error",
        POLICIES,
        "byte-identical files in two splits",
        "remove the copies from one split, or set the policy of this code to drop",
    ),
    "duplicate_within_split": CheckRule("warn", POLICIES, "byte-identical files in one split (drop keeps one)"),
    "near_duplicate_across_splits": CheckRule("warn", POLICIES, "perceptually identical images in two splits"),
    "group_leakage": CheckRule(
        "error",
        POLICIES,
        "a patient or group in two splits",
        "fix the patient ids, or set `validation_policy: {group_leakage: drop}` and `leak_drop_from`",
    ),
    # DICOM (medcore.data.dicom)
    "dicom_pixel_data_missing": CheckRule(
        "drop",
        _UNUSABLE,
        "DICOM object without Pixel Data (a report, a state)",
        "export the images of the study, not its reports or presentation states",
    ),
    "dicom_transfer_syntax_unsupported": CheckRule(
        "drop",
        _UNUSABLE,
        "no installed decoder for the transfer syntax",
        "install the package the finding names, or export uncompressed",
    ),
    "dicom_modality_not_radiograph": CheckRule(
        "drop",
        POLICIES,
        "modality other than CR, DX, RG, MG, IO, PX",
        "remove the non-radiographs from the export, or set the policy to warn",
    ),
    "dicom_multiframe": CheckRule(
        "drop",
        POLICIES,
        "more than one frame (warn: the first frame is used)",
        "export single-frame images, or set the policy to warn to use each first frame",
    ),
    "dicom_photometric_unsupported": CheckRule(
        "drop",
        POLICIES,
        "not MONOCHROME1/2 (warn: read as luminance)",
        "export the original grayscale images, not screen captures",
    ),
    "dicom_burned_in_annotation": CheckRule(
        "drop",
        POLICIES,
        "Burned In Annotation YES: identifying text in pixels",
        "export images without burned-in text (de-identify the pixels first)",
    ),
    "dicom_mixed_views": CheckRule(
        "warn",
        POLICIES,
        "view positions differ (drop: keep the most common only)",
        "train one condition per view, or set the policy to warn or drop",
    ),
    "dicom_mixed_body_parts": CheckRule(
        "warn",
        POLICIES,
        "body parts differ (drop: keep the most common only)",
        "train one condition per body part, or set the policy to warn or drop",
    ),
    # descriptions of the data: they never take a policy
    "label_excluded": CheckRule("info", (), "class listed in `exclude`: left out of the task and counted"),
    "file_skipped": CheckRule("info", (), "file in a class folder without an image file name (e.g. .txt)"),
    "dicom_summary": CheckRule("info", (), "DICOM bit depths, photometric interpretations, windowing, compression"),
    "image_encoding_unusual": CheckRule("info", (), "RGBA, 16-bit, palette, CMYK, very large, gray stored as colour"),
    "groups_unknown": CheckRule("info", (), "no group ids, so patient leakage cannot be checked"),
    "group_summary": CheckRule("info", (), "how many groups the images form"),
    "group_mixed_labels": CheckRule("info", (), "groups holding images of both classes"),
}


def _check_policies(value: Mapping[str, str]) -> dict[str, str]:
    """Reject unknown finding codes and policies a code cannot take, naming the code."""
    for code, policy in value.items():
        rule = CHECKS.get(code)
        if rule is None:
            raise _problem(code, f"unknown finding code (known: {', '.join(sorted(CHECKS))})")
        if not rule.allowed:
            raise _problem(code, "describes the data and takes no policy")
        if policy not in rule.allowed:
            raise _problem(code, f"must be one of {', '.join(rule.allowed)}, got {policy!r}")
    return dict(value)


@dataclass(frozen=True, config=_SETTINGS)
class SplitMinimum:
    """Images of each class a split must hold; read like a mapping (`minimum["train"]`, `dict(minimum)`)."""

    train: int = _integer(2, 1, 10**6, "fewest images of each class in the train split")
    val: int = _integer(1, 1, 10**6, "fewest images of each class in the val split")
    test: int = _integer(1, 1, 10**6, "fewest images of each class in the test split")

    def __getitem__(self, split: str) -> int:
        return getattr(self, split)

    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))


MIN_PER_CLASS_DEFAULT = dict(SplitMinimum())


@dataclass(frozen=True, config=_SETTINGS)
class ValidationSettings:
    """Dataset-check policy: what each finding code does, and the thresholds behind the checks."""

    policy: Mapping[str, str] = Field(
        default_factory=lambda: {c: r.default for c, r in CHECKS.items()},
        description="finding code -> error, drop or warn; codes not named keep their default (README: Validation)",
    )
    min_per_class: SplitMinimum = Field(default_factory=SplitMinimum)
    min_class_fraction: float = _number(0.05, 0.0, 0.5, "a class under this share of a split is `class_imbalance`")
    # Re-encoding, resizing and brightness changes stay under ~14 bits; distinct radiographs of the real
    # sets differ by 36+.
    near_duplicate_distance: int = _integer(
        16, 0, 128, "bits (of 256) two perceptual hashes may differ by and still be one image"
    )
    leak_drop_from: LeakSide = _choice("heldout", "which side of a cross-split leak loses its rows under `drop`")

    @field_validator("policy", mode="after")
    @classmethod
    def _policies(cls, value: Mapping[str, str]) -> dict[str, str]:
        defaults = {c: r.default for c, r in CHECKS.items()}
        # Validated again by dataclasses.replace, when the defaults (`info` included) are already merged in.
        return {**defaults, **_check_policies({c: p for c, p in value.items() if defaults.get(c) != p})}

    def for_condition(self, condition: Condition) -> ValidationSettings:
        """Return these settings with `condition`'s own overrides applied."""
        return dataclasses.replace(
            self,
            policy={**self.policy, **dict(condition.validation_policy)},
            leak_drop_from=condition.leak_drop_from or self.leak_drop_from,
        )


# --- conditions and profiles -------------------------------------------------------------------------


def canonical_label(value: Any) -> str:
    """Return a label as text, with integral floats written as ints ("1.0" and 1 both give "1")."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _label_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("must be a non-empty list of labels")
    return tuple(canonical_label(v) for v in value)


_Labels = Annotated[tuple[str, ...], Field(json_schema_extra={"kind": "list of labels"})]


@dataclass(frozen=True, config=_SETTINGS)
class Condition:
    """One binary task: which dataset folder, how it is laid out, which labels are positive."""

    name: str = Field(description="the condition's key under `conditions`")
    dataset: str = _text(..., "folder under data_root holding the images (and manifest)")
    layout: Literal["folders", "csv"] = _choice(..., "class folders (`folders`) or a CSV manifest (`csv`)")
    positive: _Labels = Field(description="labels (folder names or manifest values) of the positive class")
    negative: _Labels = Field(description="labels of the negative class")
    manifest: str | None = _text(None, "the CSV manifest inside the dataset folder (required for `csv`)")
    image_column: str = _text("image", "manifest column holding each image's path")
    label_column: str = _text("label", "manifest column holding each image's label")
    split_column: str | None = _text("split", "manifest column holding train/val/test, if any")
    group_column: str | None = _text(None, "manifest column holding the patient id, if any")
    group_pattern: str | None = _text(None, "regex on the file name; group 1 (or the match) is the patient")
    exclude: _Labels = Field((), description="known other classes: left out of the task and counted, not flagged")
    validation_policy: Mapping[str, str] = Field(
        default_factory=dict, description="finding code -> policy, over `validation.policy`"
    )
    leak_drop_from: LeakSide | None = _choice(None, "overrides `validation.leak_drop_from` for this condition")
    nightly_policy: NightlyPolicy | None = _choice(None, "overrides `nightly.policy` for this condition")
    caveats: tuple[str, ...] = Field(
        (),
        description="known limits of the data (e.g. a train/test shift), listed in every model card of this condition",
    )
    resize: Literal["squash", "pad"] | None = _choice(None, "overrides every profile's `resize` for this condition")
    study_column: str | None = _text(None, "manifest column holding the study id; then test figures are per study")
    study_aggregation: Literal["mean", "max"] = _choice("mean", "a study's probability from its images' (MURA: mean)")
    reference: str | None = _text(None, "published figures to read the study-level results beside")
    # A small set gets few steps from an epoch count sized for the large ones (limb: 34 steps an epoch).
    profiles: Mapping[str, Mapping[str, Any]] = Field(
        default_factory=dict,
        description="profile -> its keys this condition trains with instead (e.g. more epochs for a small set)",
    )

    _labels = field_validator("positive", "negative", "exclude", mode="before")(_label_list)
    _policies = field_validator("validation_policy", mode="after")(_check_policies)

    @field_validator("group_pattern", mode="after")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Condition:
        if self.layout == "csv" and self.manifest is None:
            raise _problem("manifest", "is required for layout csv")
        both = set(self.positive) & set(self.negative)
        if both:
            raise _problem("positive", f"label {sorted(both)[0]!r} is listed as both positive and negative")
        overlap = set(self.exclude) & (set(self.positive) | set(self.negative))
        if overlap:
            raise _problem("exclude", f"label {sorted(overlap)[0]!r} is also listed as positive or negative")
        return self


@dataclass(frozen=True, config=_SETTINGS)
class Augmentation:
    """Anatomy-safe random transforms applied during training only."""

    rotation: float = _number(0.0, 0.0, 0.5, "random rotation, as a fraction of a full turn")
    zoom: float = _number(0.0, 0.0, 0.9, "random zoom, as a fraction of the image")
    contrast: float = _number(0.0, 0.0, 0.9, "random contrast change, as a fraction")
    horizontal_flip: bool = _flag(False, "random left-right flip; never for chest films (the heart's side matters)")
    # A mitigation for the border shortcut (medcore.assess.probes): markers, text and rulers sit in the band.
    border_erase: float = _number(
        0.0, 0.0, 1.0, "share of training images whose outer band is replaced by the image's mean (0: off)"
    )
    border_band: float = _number(0.125, 0.01, 0.45, "width of the erased band, as a fraction of the image side")


@dataclass(frozen=True, config=_SETTINGS)
class Progressive:
    """Progressive resizing: the first epochs at a smaller size, the rest (and every val figure kept) at full size.

    DenseNet121's weights do not depend on the image size, so what the small epochs learn carries over;
    each costs about (small / full)^2 of a full-size epoch.
    """

    epochs: int = _integer(0, 0, 1000, "epochs at `image_size` before the profile's own size (0: off)")
    image_size: int = _integer(96, 32, 1024, "side in pixels of those first epochs")


WEIGHT_SOURCES = ("none", "imagenet", "champion", "shared")


@dataclass(frozen=True, config=_SETTINGS)
class Profile:
    """How hard to train: image size, schedule and augmentation."""

    name: str = Field(description="the profile's key under `profiles`")
    image_size: int = _integer(128, 32, 1024, "side in pixels images are resized to")
    epochs: int = _integer(10, 1, 1000, "epochs to train (early stopping may end sooner)")
    patience: int = _integer(3, 0, 1000, "epochs without a better val AUC before stopping")
    batch_size: int = _integer(32, 1, 4096, "images per training step")
    learning_rate: float = _number(1e-3, 1e-8, 1.0, "Adam's learning rate")
    # cosine converges within a fixed nightly epoch budget instead of waiting for a plateau.
    lr_schedule: Literal["constant", "cosine"] = _choice(
        "constant",
        "`cosine` decays each phase (progressive resizing's two sizes are one) from learning_rate to 5 % of it "
        "by its last epoch",
    )
    # So an imbalanced set (pneumonia is 3:1) does not buy accuracy by favouring the majority class.
    class_weighting: bool = _flag(True, "weight each class by the inverse of its share of the train split")
    weights: str = _text(
        "none",
        "none, imagenet, champion (warm start), shared (`medcore pretrain`), or a "
        "DenseNet121 notop weights file relative to the config",
    )
    freeze_epochs: int = _integer(0, 0, 1000, "epochs with a frozen backbone before fine-tuning (pretrained weights)")
    fine_tune_learning_rate: float | None = _number(
        None, 1e-9, 1.0, "rate after unfreezing; default learning_rate / 10"
    )
    precision: Literal["auto", "float32", "mixed_bfloat16", "onednn_amp"] = _choice(
        "auto",
        "`auto` picks per CPU from medcore.model.compute's measured table; `mixed_bfloat16` (Keras policy) and "
        "`onednn_amp` (TF's oneDNN bf16 graph rewrite) only where the CPU has native bf16",
    )
    # On by default: measured 1.3-1.5x in float32 and what makes bf16 pay at all
    # (docs/decisions/0004-precision-auto-bf16.md).
    fused_batch_norm: bool = _flag(
        True,
        "train batch norm through TensorFlow's fused kernel (same maths, fewer ops; the saved model is unchanged)",
    )
    # Keras' 0.99 averages batch statistics over ~100 steps, so a network trained from scratch on a small set
    # (limb: 34 steps an epoch) is judged on val with statistics of weights long gone: limb's val AUC after 6
    # epochs was 0.59 at 0.99 and 0.78 at 0.9, from identical training
    # (docs/decisions/0001-batch-norm-momentum.md). 0.9 is PyTorch's default.
    batch_norm_momentum: float = _number(
        0.9, 0.0, 0.999, "weight of the old moving mean and variance at each step of every batch norm layer"
    )
    # A profile's cores become its pool slots in the DAG: 0 trains alone on the machine.
    cores: int = _integer(
        1, 0, 256, "cores one training task takes (its `training` pool slots and threads); 0: every core"
    )
    intra_op_threads: int = _integer(0, 0, 256, "TensorFlow intra-op threads; 0: MEDCORE_THREADS, else TF's default")
    inter_op_threads: int = _integer(
        0, 0, 256, "TensorFlow inter-op threads; 0: MEDCORE_INTER_THREADS, else TF's default"
    )
    # The graph trace costs ~40 s, which only pays off beyond tiny runs.
    execution: Literal["graph", "eager"] = _choice("graph", "`eager` skips the graph trace (tiny runs only)")
    max_images_per_split: int | None = _integer(None, 4, 10**9, "cap per split for smoke runs; null uses every image")
    # Knee and humerus films come in every aspect; stretching them to a square distorts the anatomy.
    resize: Literal["squash", "pad"] = _choice(
        "squash", "how an image becomes square: stretch it (`squash`) or keep its aspect and pad with black (`pad`)"
    )
    augmentation: Augmentation = Field(default_factory=Augmentation)
    progressive: Progressive = Field(default_factory=Progressive)

    @model_validator(mode="after")
    def _progressive_fits(self) -> Profile:
        steps = self.progressive
        if steps.epochs:
            if steps.image_size >= self.image_size:
                raise _problem("progressive.image_size", f"must be below the profile's image_size ({self.image_size})")
            if steps.epochs >= self.epochs:
                raise _problem("progressive.epochs", f"must leave one of the {self.epochs} epochs at full size")
            if self.freeze_epochs:
                raise _problem("progressive", "cannot be combined with freeze_epochs (one of the two phases)")
        return self

    def for_condition(self, condition: Condition) -> Profile:
        """This profile as `condition` trains it: its own keys for this profile, then its `resize`, over ours."""
        changes = dict(condition.profiles.get(self.name, {}))
        if condition.resize is not None:
            changes.setdefault("resize", condition.resize)
        changes = {k: v for k, v in changes.items() if getattr(self, k, None) != v}
        return dataclasses.replace(self, **changes) if changes else self

    @field_validator("weights", mode="after")
    @classmethod
    def _weights_file(cls, value: str, info: ValidationInfo) -> str:
        """A weights file is resolved against the loaded config file's folder and must exist."""
        if value in WEIGHT_SOURCES:
            return value
        base = Path((info.context or {}).get("base", "."))
        path = (base / Path(value).expanduser()).resolve()
        if not path.is_file():
            raise ValueError(f"must be {', '.join(WEIGHT_SOURCES)} or an existing weights file; {path} not found")
        return str(path)


# --- evaluation, Grad-CAM, registry, notify ------------------------------------------------------------
__all__ += ["RegistrySettings", "NotifySettings", "GATE_METRICS", "DEFAULT_GATES", "DEFAULT_TIERS", "TIER_ORDER"]


@dataclass(frozen=True, config=_SETTINGS)
class Tiers:
    """Quality tiers: the minimum lower bound of the test ROC AUC interval, best tier first.

    Judged on the lower bound so a lucky small test split cannot earn a tier its uncertainty does not
    support. Iterates as (name, minimum) pairs; below the last tier a model is "insufficient".
    """

    excellent: float = _number(0.90, 0.5, 1.0, "lowest AUC lower bound of the excellent tier")
    good: float = _number(0.80, 0.5, 1.0, "lowest AUC lower bound of the good tier")
    moderate: float = _number(0.70, 0.5, 1.0, "lowest AUC lower bound of the moderate tier")

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter([(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)])

    @model_validator(mode="after")
    def _descending(self) -> Tiers:
        pairs = list(self)
        for (better, high), (worse, low) in zip(pairs, pairs[1:]):
            if not high > low:
                raise _problem(better, f"must be above {worse} ({low}), got {high}")
        return self


DEFAULT_TIERS = tuple(Tiers())
TIER_ORDER = tuple(name for name, _ in DEFAULT_TIERS) + ("insufficient",)  # best first, as evaluation names them


@dataclass(frozen=True, config=_SETTINGS)
class EvaluationSettings:
    """How test figures are measured: bootstrap intervals, threshold rule, quality tiers."""

    # Fewer than 1000 resamples make the 2.5th percentile itself too noisy to report.
    bootstrap_resamples: int = _integer(1000, 1000, 100_000, "bootstrap resamples behind every interval")
    confidence: float = _number(0.95, 0.5, 0.999, "coverage of the bootstrap intervals")
    threshold_rule: Literal["youden", "sensitivity"] = _choice(
        "youden", "how the threshold is chosen on val: Youden's J, or the highest reaching target_sensitivity"
    )
    target_sensitivity: float = _number(0.90, 0.01, 1.0, "sensitivity the `sensitivity` rule must reach on val")
    calibration_bins: int = _integer(10, 2, 100, "bins of the calibration curve and error")
    # A bootstrap of a handful of patients says nothing (two patients give a zero-width interval).
    min_per_class: int = _integer(10, 1, 100_000, "fewer test patients (else images) of a class: no tier")
    tiers: Tiers = Field(default_factory=Tiers)
    calibrate: bool = _flag(True, "fit a temperature on val logits; every probability shown is sigmoid(logit / T)")
    # Nine test images give an AUC interval of 0.05-0.80: a small set is scored out of fold instead.
    small_sets: Literal["crossval", "test_split"] = _choice(
        "crossval", "where test has fewer patients of a class than min_per_class: cross-validate, or keep the split"
    )
    crossval_folds: int = _integer(5, 2, 20, "folds of the stratified group k-fold cross-validation of small sets")
    crossval_repeats: int = _integer(2, 1, 20, "repeats of it, each with its own shuffle; out-of-fold logits averaged")


def _sanity_stages(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping) or not value:
        raise ValueError("must map each stage's name to a list of layer-name patterns, e.g. {head: [logit]}")
    stages = {}
    for name, patterns in value.items():
        if isinstance(patterns, str):
            patterns = [patterns]
        if (
            not isinstance(patterns, (list, tuple))
            or not patterns
            or not all(isinstance(p, str) and p for p in patterns)
        ):
            raise ValueError(f"stage {name!r} must list layer-name patterns (fnmatch), e.g. [logit]")
        stages[str(name)] = tuple(patterns)
    return stages


@dataclass(frozen=True, config=_SETTINGS)
class ProbeSettings:
    """Shortcut probes and the saliency sanity check run in the Grad-CAM stage (the rules: medcore.assess.probes)."""

    enabled: bool = _flag(True, "run the empty-film, border/centre and model-randomisation probes")
    images: int = _integer(100, 10, 100000, "test images (drawn within each class) the border/centre probe scores")
    border_band: float = _number(0.125, 0.01, 0.45, "width of the outer band, as a fraction of the image side")
    border_keep: float = _number(
        0.5, 0.05, 1.0, "share of the model's ROC AUC above chance the border alone must keep for the probe to fire"
    )
    empty_film_images: int = _integer(16, 1, 1024, "films the blurred and noise empty films are made from")
    sanity_images: int = _integer(16, 2, 1024, "most positive test images the randomisation check compares maps on")
    # DenseNet121: the classifier head, then its fourth (last) dense block and the batch norm after it.
    sanity_stages: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {"classifier head": ("logit",), "last dense block": ("conv5_*", "bn")},
        description="randomisation stages, top first, each a list of layer-name patterns (cumulative)",
    )
    sanity_max_similarity: float = _number(
        0.5, 0.0, 1.0, "median rank correlation of maps (trained vs randomised) at which the sanity check fires"
    )
    sanity_draws: int = _integer(3, 1, 20, "independent randomisations per stage the model's maps are compared with")

    @field_validator("sanity_stages", mode="before")
    @classmethod
    def _stages(cls, value: Any) -> dict[str, tuple[str, ...]]:
        return _sanity_stages(value)


@dataclass(frozen=True, config=_SETTINGS)
class GradcamSettings:
    """Grad-CAM target, overlays, and the deletion test of faithfulness."""

    layer: str = _text("relu", "target layer; `relu` is DenseNet121's final activation")
    samples: int = _integer(4, 1, 64, "overlays per kind (TP, TN, FP, FN)")
    batch_size: int = _integer(32, 1, 1024, "images per Grad-CAM batch")
    deletion_images: int = _integer(32, 1, 1024, "highest-scoring test images the deletion curve is measured on")
    deletion_steps: int = _integer(10, 2, 100, "steps of the deletion curve")
    deletion_baseline: Literal["blur", "mean"] = _choice(
        "blur", "what deleted pixels become: the blurred image or its mean"
    )
    deletion_random_maps: int = _integer(5, 1, 100, "random maps per image the deletion curve is compared with")
    deletion_alpha: float = _number(0.05, 0.001, 0.5, "level of the paired one-sided test that Grad-CAM beats random")
    seed: int | None = _integer(None, 0, _SEED_MAX, "seeds the random-map baseline; null: the top-level seed")
    probes: ProbeSettings = Field(default_factory=ProbeSettings)


# The figures evaluation measures with a point estimate and an interval, and the report shows.
METRICS = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "brier",
    "calibration_error",
    "kappa",
)

# Figures a gate may name, each "higher is better"; `<metric>_low` gates the lower bound of its interval.
GATE_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc")
GateName = Literal[
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "accuracy_low",
    "precision_low",
    "recall_low",
    "specificity_low",
    "f1_low",
    "roc_auc_low",
    "pr_auc_low",
]
assert set(typing.get_args(GateName)) == set(GATE_METRICS) | {f"{m}_low" for m in GATE_METRICS}
DEFAULT_GATES = (("roc_auc", 0.70), ("recall", 0.50), ("specificity", 0.50))
_Fraction = Annotated[float, Field(ge=0.0, le=1.0, strict=True, allow_inf_nan=False)]


@dataclass(frozen=True, config=_SETTINGS)
class RegistrySettings:
    """Where the champion of each condition lives, and what a model must show to replace it."""

    # Relative to the file loaded, not to one it extends: configs/demo.yaml then keeps its own registry
    # (configs/registry), so a demo model never becomes the champion of a real run.
    root: Path | None = Field(
        None,
        description="registry folder, relative to the loaded config "
        "(default `registry`); MEDCORE_REGISTRY_ROOT overrides it",
    )
    # A `gates` mapping replaces the defaults as a whole (a null value drops one gate inherited via
    # `extends`), so what a model must pass is always what the file says. Stored as (figure, minimum) pairs.
    gates: Mapping[GateName, _Fraction | None] = Field(
        DEFAULT_GATES,
        description="figure -> minimum (0-1) on the candidate's selection (val) split; `<figure>_low` "
        "gates its interval's lower bound",
    )
    # Judged on the selection (val) split, paired with the champion re-scored on the same images.
    margin: float = _number(
        0.02,
        0.0,
        0.5,
        "promote only if the lower bound of the paired interval of (challenger - "
        "best champion figure on these val images) ROC AUC is above -margin",
    )
    history: int = _integer(20, 1, 10_000, "decisions kept per condition")
    # A promotion holds the lock for seconds; waiting minutes means the holder hangs (e.g. a dead NFS client).
    lock_timeout: float = _number(
        300.0,
        1.0,
        86_400.0,
        "seconds a promotion waits for another run's registry lock before failing with the holder's name",
    )
    # The tier also demands enough test patients, which no point-estimate gate checks; null leaves it out
    # (tiny demo and test runs could never promote).
    min_tier: Literal["excellent", "good", "moderate", "insufficient"] | None = _choice(
        None, "lowest evaluation quality tier a champion may have"
    )

    @field_validator("gates", mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        # (figure, minimum) pairs, as code builds them and as a loaded config holds them
        return dict(value) if isinstance(value, tuple) else value

    @field_validator("gates", mode="after")
    @classmethod
    def _pairs(cls, value: Mapping[str, float | None]) -> tuple[tuple[str, float], ...]:
        return tuple((name, minimum) for name, minimum in value.items() if minimum is not None)


def _addresses(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) and "@" in a for a in value):
        raise ValueError(f"must be a list of e-mail addresses, got {value!r}")
    return tuple(a.strip() for a in value)


@dataclass(frozen=True, config=_SETTINGS)
class NotifySettings:
    """Who gets the report by e-mail, through which Airflow SMTP connection."""

    conn_id: str = _text("smtp_default", "Airflow SMTP connection; credentials live there, never here")
    recipients: tuple[str, ...] = Field((), description="e-mail addresses; none: the report is written, not sent")
    from_email: str | None = _text(None, "sender; default: the connection's `from_email` extra, else medcore@localhost")
    max_images: int = _integer(8, 0, 100, "Grad-CAM images attached (and shown inline); report.md always is")
    report_url: str | None = _text(None, "the Airflow UI's base URL, so links in the e-mail open the report page")

    _recipients = field_validator("recipients", mode="before")(_addresses)


# --- nights that build on each other ------------------------------------------------------------------
__all__ += ["NightlySettings", "TaskSettings", "NIGHTLY_POLICIES", "NightSettings", "NightBudget"]
NIGHTLY_POLICIES = typing.get_args(NightlyPolicy)


@dataclass(frozen=True, config=_SETTINGS)
class NightlySettings:
    """How each night starts: from scratch, or from the champion; and when it need not train at all."""

    policy: NightlyPolicy = _choice(
        "auto", "`retrain` from scratch, `continue` from the champion, or `auto` (continue once a champion exists)"
    )
    continue_epochs: float = _number(0.16, 0.01, 1.0, "share of the profile's epochs a warm start trains (at least 1)")
    continue_learning_rate: float = _number(
        0.1, 0.001, 1.0, "share of the profile's learning rates a warm start trains at (the champion has converged)"
    )
    max_warm_starts: int = _integer(
        3,
        0,
        10_000,
        "warm starts in a row, since the last training from scratch, before a night retrains (0: no limit)",
    )
    skip_unchanged: bool = _flag(True, "train nothing when data, condition config and code equal the champion's")
    warm_start: WarmStartMethod = _choice(
        "continue",
        "`continue`: the champion's weights as they are; `shrink_perturb`: shrink x w + perturb x a fresh "
        "initialisation (Ash & Adams 2020, medcore.model.warmstart)",
    )
    shrink: float = _number(0.4, 0.0, 1.0, "shrink_perturb: the factor every trainable weight is scaled by")
    perturb: float = _number(0.01, 0.0, 1.0, "shrink_perturb: the share of a fresh initialisation added")
    batch_norm: BatchNormHandling = _choice(
        "reestimate", "shrink_perturb: batch norm's moving statistics `reestimate`d on the train split, or `keep`"
    )
    epochs_by_growth: bool = _flag(
        False, "a warm start trains at least the share of epochs that its train split's new images are"
    )
    rewarm: float = _number(
        0.0,
        0.0,
        1.0,
        "share of a warm start's steps spent raising the rate from continue_learning_rate back to the "
        "profile's, then cosine (0: no re-warm)",
    )


@dataclass(frozen=True, config=_SETTINGS)
class TaskSettings:
    """Airflow retries and per-task timeouts: a hung task ends, is retried, and the run still reports."""

    retries: int = _integer(2, 0, 20, "retries of each chain task (validate, train, evaluate, gradcam)")
    retry_delay_seconds: int = _integer(60, 0, 86_400, "first retry delay; it doubles on each retry")
    validate_minutes: float = _number(30.0, 0.01, 1440.0, "validate's execution_timeout")
    train_minutes_fixed: float = _number(10.0, 0.01, 1440.0, "train's timeout: start-up and the first step's trace")
    train_minutes_per_epoch: float = _number(
        15.0, 0.01, 1440.0, "train's timeout: plus this per epoch of the longest profile"
    )
    evaluate_minutes: float = _number(30.0, 0.01, 1440.0, "evaluate's execution_timeout")
    gradcam_minutes: float = _number(30.0, 0.01, 1440.0, "gradcam's execution_timeout")
    report_minutes: float = _number(15.0, 0.01, 1440.0, "plan, promote, report, notify and verdict each")

    def train_minutes(self, profiles: Mapping[Any, Profile]) -> float:
        """The training timeout: fixed start-up plus the per-epoch allowance for the longest profile."""
        return self.train_minutes_fixed + self.train_minutes_per_epoch * max(
            (p.epochs for p in profiles.values()), default=1
        )


@dataclass(frozen=True, config=_SETTINGS)
class NightBudget:
    """Minutes a night may take, by kind: cold (a condition trains from scratch) or following (all warm)."""

    cold: float = _number(240.0, 1.0, 1440.0, "budget of a night on which any condition trains from scratch")
    following: float = _number(90.0, 1.0, 1440.0, "budget of a night on which every condition continues or skips")


@dataclass(frozen=True, config=_SETTINGS)
class NightSettings:
    """The night budget planner (medcore.nights.budget): what a night may cost and how it is cut to fit."""

    budget_minutes: NightBudget = Field(default_factory=NightBudget)
    # Rung 2 of the ladder never trains a chain for fewer than this share of its epochs; rungs 4 and 5 follow.
    min_epoch_share: float = _number(0.5, 0.05, 1.0, "fewest epochs the planner may cut a chain to, as a share")
    keep_profile: str = _text("standard", "the profile rung 4 keeps when it drops the others of a condition")
    # A training stops at the end of the epoch that would overrun (predicted x (1 + margin) + slack).
    deadline_margin: float = _number(0.5, 0.0, 10.0, "a chain's training deadline: its prediction times 1 + this")
    deadline_slack_minutes: float = _number(10.0, 0.0, 1440.0, "plus these minutes (start-up varies most)")
    probe: bool = _flag(True, "time a <= 30 s DenseNet121 probe when no night on this CPU kind has been measured")


@dataclass(frozen=True, config=_SETTINGS)
class SplitSettings:
    """How val and test are carved out where a dataset ships no split of its own."""

    val_fraction: float = _number(0.15, 0.01, 0.5, "share of each unsplit dataset held out for validation")
    test_fraction: float = _number(0.15, 0.01, 0.5, "share of each unsplit dataset held out for testing")


def _named(kind: str) -> Any:
    """Give each entry of `conditions` / `profiles` its key as its name (a `name:` key is not the user's to set)."""

    def name_entries(cls: type, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        named = {}
        for key, entry in value.items():
            entry = {} if entry is None else entry
            if isinstance(entry, dict):
                if "name" in entry:
                    raise _problem(f"{key}.name", f"unknown key (a {kind} is named by its key)")
                entry = {**entry, "name": str(key)}
            named[str(key)] = entry
        return named

    return classmethod(name_entries)


@dataclass(frozen=True, config=_SETTINGS)
class Config:
    """Everything a run needs to know, with paths already resolved (by `load_config`)."""

    data_root: Path = Field(
        Path("data"),
        description="folder holding the datasets, relative to the file that sets it; MEDCORE_DATA_ROOT overrides it",
    )
    runs_root: Path = Field(
        Path("runs"),
        description="folder runs are written to, relative to the file that sets it; MEDCORE_RUNS_ROOT overrides it",
    )
    seed: int = _integer(1337, 0, _SEED_MAX, "seeds splits, training, bootstrap and Grad-CAM's random baseline")
    split: SplitSettings = Field(default_factory=SplitSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    gradcam: GradcamSettings = Field(default_factory=GradcamSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    nightly: NightlySettings = Field(default_factory=NightlySettings)
    tasks: TaskSettings = Field(default_factory=TaskSettings)
    night: NightSettings = Field(default_factory=NightSettings)
    conditions: Mapping[str, Condition] = Field(default_factory=dict, description="one binary task per key")
    profiles: Mapping[str, Profile] = Field(
        default_factory=dict, description="one training recipe per key; every condition trains with each"
    )
    # The file this was loaded from; not a YAML key.
    path: Path = dataclasses.field(init=False, default=DEFAULT_CONFIG)

    _conditions = field_validator("conditions", mode="before")(_named("condition"))
    _profiles = field_validator("profiles", mode="before")(_named("profile"))

    @model_validator(mode="after")
    def _complete(self) -> Config:
        for key in ("conditions", "profiles"):
            if not getattr(self, key):
                raise _problem(key, f"at least one {key[:-1]} is required")
        for condition in self.conditions.values():
            for name, keys in condition.profiles.items():
                where = f"conditions.{condition.name}.profiles.{name}"
                if name not in self.profiles:
                    raise _problem(where, f"no profile named {name!r} (have {', '.join(self.profiles)})")
                if "name" in keys:
                    raise _problem(f"{where}.name", "unknown key (a profile is named by its key)")
                try:
                    self.profiles[name].for_condition(condition)
                except ValidationError as exc:
                    error = exc.errors()[0]
                    key = ".".join(str(part) for part in error["loc"])
                    # Worded as for the same key under `profiles`, whose declaration it is.
                    message = _message(error, ("profiles", name, *error["loc"]))
                    raise _problem(f"{where}.{key}" if key else where, message) from None
        if self.gradcam.seed is None:  # the seed is parsed once: Grad-CAM's default is the run's
            object.__setattr__(self, "gradcam", dataclasses.replace(self.gradcam, seed=self.seed))
        return self

    @property
    def val_fraction(self) -> float:
        return self.split.val_fraction

    @property
    def test_fraction(self) -> float:
        return self.split.test_fraction

    def trained_profiles(self) -> dict[tuple[str, str], Profile]:
        """Every (condition, profile) pair a full run trains, with the condition's own profile keys applied."""
        return {
            (c, p): profile.for_condition(condition)
            for c, condition in self.conditions.items()
            for p, profile in self.profiles.items()
        }

    def validation_for(self, condition: Condition) -> ValidationSettings:
        """Return the validation settings for `condition`: the top-level ones plus its own overrides."""
        return self.validation.for_condition(condition)

    def dataset_dir(self, condition: Condition) -> Path:
        """Return the folder that holds `condition`'s images."""
        return self.data_root / condition.dataset


# --- loading -----------------------------------------------------------------------------------------

_CONFIG = TypeAdapter(Config)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the YAML config at `path` (default: `$MEDCORE_CONFIG` or `conditions.yaml`).

    `MEDCORE_DATA_ROOT`, `MEDCORE_RUNS_ROOT` and `MEDCORE_REGISTRY_ROOT` in the environment override
    `data_root`, `runs_root` and `registry.root`. Raises ConfigError naming the file and key of the
    first problem found.
    """
    path = Path(path or os.environ.get("MEDCORE_CONFIG") or DEFAULT_CONFIG).resolve()
    layers = _read_layers(path)
    raw: dict[str, Any] = {}
    for _, layer in reversed(layers):
        raw = _deep_merge(raw, layer)
    try:
        config = _CONFIG.validate_python(raw, context={"base": path.parent})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = _key_path(error)
        raise ConfigError(
            f"{_origin(loc, layers)}: {'.'.join(map(str, loc)) or '(top level)'}: {_message(error, loc)}"
        ) from None

    def resolved(key: str, env: str) -> Path:
        if os.environ.get(env):
            return Path(os.environ[env]).expanduser().resolve()
        # Relative paths are relative to the file that wrote them.
        origin = next((p for p, layer in layers if key in layer), path)
        return (origin.parent / getattr(config, key).expanduser()).resolve()

    if os.environ.get("MEDCORE_REGISTRY_ROOT"):
        registry_root = Path(os.environ["MEDCORE_REGISTRY_ROOT"]).expanduser().resolve()
    else:
        registry_root = (path.parent / (config.registry.root or Path("registry")).expanduser()).resolve()
    config = dataclasses.replace(
        config,
        data_root=resolved("data_root", "MEDCORE_DATA_ROOT"),
        runs_root=resolved("runs_root", "MEDCORE_RUNS_ROOT"),
        registry=dataclasses.replace(config.registry, root=registry_root),
    )
    object.__setattr__(config, "path", path)
    return config


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


MAX_CONFIG_BYTES = 1 * 2**20  # conditions.yaml is under 10 kB: a bigger "config" is a mistake or an attack


def _bounded_text(path: Path) -> str:
    """The UTF-8 text of `path`, only if it is a regular file of at most MAX_CONFIG_BYTES.

    Opened without blocking (a FIFO would wait for a writer forever) and checked on the open file
    (no swap between check and read); never reads more than the limit plus one byte (`/dev/zero`).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{path}: not a regular file (a device, FIFO or socket); name the YAML config file")
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB; not a config file")
    return data.decode("utf-8")


def _read_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """`path` and every file it `extends`, nearest first, each as (file, mapping without `extends`)."""
    if path in seen:
        raise ConfigError(f"{path}: extends: circular reference")
    try:
        text = _bounded_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; name the YAML config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or type(exc).__name__}") from None
    try:
        raw = yaml.safe_load(text)
    except RecursionError:  # PyYAML parses nesting recursively: `[[[[...` a few thousand deep
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return [(path, raw)]
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: must be the path of another config file, got {parent!r}")
    return [(path, raw), *_read_layers((path.parent / parent).resolve(), seen + (path,))]


def _key_path(error: Mapping[str, Any]) -> tuple[Any, ...]:
    """The YAML key path of a pydantic error: pydantic's own markers dropped, a cross-field key appended."""
    loc = tuple(part for part in error["loc"] if part != "[key]")
    if error["type"] == "medcore_key":
        loc += tuple(str(error["ctx"]["key"]).split("."))
    return loc


def _origin(loc: tuple[Any, ...], layers: list[tuple[Path, dict[str, Any]]]) -> Path:
    """The file that wrote the deepest part of `loc` (the nearest file wins, as in the merge)."""
    for depth in range(len(loc), 0, -1):
        for path, layer in layers:
            node: Any = layer
            for part in loc[:depth]:
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is not _MISSING:
                return path
    return layers[0][0]


_MISSING = object()


def _declared(loc: tuple[Any, ...]) -> tuple[Any, Any]:
    """(the settings class that declares the last key of `loc`, that key's FieldInfo); None where not declared."""
    kind: Any = Config
    owner, info = None, None
    for part in loc:
        if hasattr(kind, "__pydantic_fields__"):
            owner, info = kind, kind.__pydantic_fields__.get(part)
            if info is None:
                return owner, None
            kind = _unwrap(info.annotation)
        elif typing.get_origin(kind) in (dict, Mapping):
            owner, info, kind = None, None, _unwrap(typing.get_args(kind)[1])  # a user's key: conditions.<name>
        else:
            return None, None
    return owner, info


def _unwrap(annotation: Any) -> Any:
    """`X` from `X | None`, `X | None` and `Annotated[X, ...]`."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _yaml_keys(cls: Any) -> list[str]:
    """The keys a settings class accepts in YAML (not the names filled in from the mapping's keys, nor `path`)."""
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name != "name"]


def _bounds(info: Any) -> str:
    low = next((m.ge for m in getattr(info, "metadata", ()) if hasattr(m, "ge")), None)
    high = next((m.le for m in getattr(info, "metadata", ()) if hasattr(m, "le")), None)
    if low is not None and high is not None:
        return f" between {low} and {high}"
    if low is not None:
        return f" >= {low}"
    return f" <= {high}" if high is not None else ""


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()  # as YAML writes it
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _message(error: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    """What is wrong, in words a config author can act on (pydantic's own words as the last resort)."""
    kind, got, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    owner, info = _declared(loc)
    if kind == "medcore_key":
        return str(ctx["message"])
    expected = str(ctx.get("expected", "?")).replace("'", "").replace(" or ", ", ")
    if "[key]" in error["loc"]:
        return f"unknown key (allowed: {expected})" if kind == "literal_error" else f"key must be text, got {got!r}"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        allowed = f" (allowed: {', '.join(_yaml_keys(owner))})" if owner is not None else ""
        return f"unknown key{allowed}"
    if kind in ("missing", "missing_argument"):
        return "is required"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer{_bounds(info)}, got {_shown(got)}"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"must be a finite number{_bounds(info)}, got {_shown(got)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"must be{_bounds(info) or ' ' + error['msg'].removeprefix('Input should be ')}, got {got}"
    if kind == "bool_type":
        return f"must be true or false, got {_shown(got)}"
    if kind == "string_type":
        return f"must be text, got {_shown(got)}"
    if kind == "literal_error":
        return f"must be one of {expected}, got {_shown(got)}"
    if kind in ("dict_type", "dataclass_type", "model_type", "mapping_type"):
        return f"must be a mapping of keys, got {_shown(got)}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, got {_shown(got)}"
    if kind in ("path_type",):
        return f"must be a path, got {_shown(got)}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    return " ".join(str(error["msg"]).split()).lower()


# --- the README's reference, generated from the declarations above -----------------------------------
README_BEGIN = "<!-- config-reference: generated by `python -m medcore.config --readme README.md`; do not edit -->"
README_END = "<!-- config-reference: end -->"


def _allowed(annotation: Any, info: Any) -> str:
    kind = _unwrap(annotation)
    nullable = kind is not annotation and type(None) in typing.get_args(annotation)
    low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    span = f" {low}–{high}" if low is not None and high is not None else ""
    if typing.get_origin(kind) is Literal:
        shown = " / ".join(f"`{v}`" for v in typing.get_args(kind))
    elif kind is bool:
        shown = "`true` / `false`"
    elif kind is int:
        shown = f"integer{span}"
    elif kind is float:
        shown = f"number{span}"
    elif kind is Path:
        shown = "path"
    elif kind is str:
        shown = "text"
    elif typing.get_origin(kind) is tuple:
        shown = "list"
    else:
        shown = "mapping"
    return shown + (", or null" if nullable else "")


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, tuple) and value and all(isinstance(p, tuple) for p in value):
        value = dict(value)
    if isinstance(value, dict) and len(value) > 4:
        return "each code's default in `CHECKS`"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        return "`{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(map(str, value)) + "]`"
    return f"`{value}`"


def _rows(cls: Any, prefix: str) -> Iterator[str]:
    infos = cls.__pydantic_fields__
    for field in dataclasses.fields(cls):
        if not field.init or field.name == "name":
            continue
        info, key = infos[field.name], prefix + field.name
        kind = _unwrap(info.annotation)
        if hasattr(kind, "__pydantic_fields__"):
            yield from _rows(kind, key + ".")
        elif typing.get_origin(kind) in (dict, Mapping) and hasattr(typing.get_args(kind)[1], "__pydantic_fields__"):
            yield f"| `{key}` | required | mapping | {info.description} |"
            yield from _rows(typing.get_args(kind)[1], f"{key}.<name>.")
        else:
            yield f"| `{key}` | {_default(info)} | {_allowed(info.annotation, info)} | {info.description} |"


def config_reference() -> str:
    """Every setting of the YAML config as a Markdown table: key, default, allowed values, meaning."""
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|", *_rows(Config, "")]
    return "\n".join(lines) + "\n"


def readme_with_reference(text: str) -> str:
    """`text` (the README) with the block between README_BEGIN and README_END regenerated."""
    head, begin, rest = text.partition(README_BEGIN)
    _, end, tail = rest.partition(README_END)
    if not begin or not end:
        raise ConfigError(f"README: markers {README_BEGIN!r} ... {README_END!r} not found")
    return f"{head}{README_BEGIN}\n{config_reference()}{README_END}{tail}"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="print the config reference, or rewrite it inside a README")
    parser.add_argument("--readme", help="rewrite the reference block of this README in place")
    args = parser.parse_args()
    if args.readme:
        readme = Path(args.readme)
        readme.write_text(readme_with_reference(readme.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(config_reference(), end="")
