"""Every finding code validation can report, the policies each may take, and the dataset-check settings.

It lives in the config rather than in medcore.data.validation because the config parser must reject
unknown codes and policies, and loading the config (at DAG parse time) must not import pandas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from medcore.config.fields import _SETTINGS, _choice, _integer, _number, _problem

if TYPE_CHECKING:
    from medcore.config.conditions import Condition

__all__ = [
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
