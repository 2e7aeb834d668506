"""Conditions (one binary task each) and profiles (one training recipe each), as the YAML declares them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass

from medcore.config.checks import LeakSide, _check_policies
from medcore.config.fields import _SETTINGS, NightlyPolicy, _choice, _flag, _integer, _number, _problem, _text

__all__ = ["canonical_label", "Condition", "Augmentation", "Progressive", "Profile", "WEIGHT_SOURCES"]


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
    # Required fields are plain `Field` calls (what `_text(..., doc)` and `_choice(..., doc)` build), so mypy's
    # dataclass model sees them as required, not defaulted; for the same reason a `Field` default is passed as
    # `default=` (mypy counts only that keyword as a default).
    dataset: str = Field(strict=True, description="folder under data_root holding the images (and manifest)")
    layout: Literal["folders", "csv"] = Field(description="class folders (`folders`) or a CSV manifest (`csv`)")
    positive: _Labels = Field(description="labels (folder names or manifest values) of the positive class")
    negative: _Labels = Field(description="labels of the negative class")
    manifest: str | None = _text(None, "the CSV manifest inside the dataset folder (required for `csv`)")
    image_column: str = _text("image", "manifest column holding each image's path")
    label_column: str = _text("label", "manifest column holding each image's label")
    split_column: str | None = _text("split", "manifest column holding train/val/test, if any")
    group_column: str | None = _text(None, "manifest column holding the patient id, if any")
    group_pattern: str | None = _text(None, "regex on the file name; group 1 (or the match) is the patient")
    exclude: _Labels = Field(
        default=(), description="known other classes: left out of the task and counted, not flagged"
    )
    validation_policy: Mapping[str, str] = Field(
        default_factory=dict, description="finding code -> policy, over `validation.policy`"
    )
    leak_drop_from: LeakSide | None = _choice(None, "overrides `validation.leak_drop_from` for this condition")
    nightly_policy: NightlyPolicy | None = _choice(None, "overrides `nightly.policy` for this condition")
    caveats: tuple[str, ...] = Field(
        default=(),
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
