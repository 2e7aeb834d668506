"""The run settings (evaluation, Grad-CAM, registry, notify, nights, tasks) and `Config`, the whole file."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from medcore.artefacts import GATE_METRICS, METRICS
from medcore.config.checks import ValidationSettings
from medcore.config.conditions import Condition, Profile
from medcore.config.fields import (
    _SEED_MAX,
    _SETTINGS,
    DEFAULT_CONFIG,
    BatchNormHandling,
    NightlyPolicy,
    WarmStartMethod,
    _choice,
    _flag,
    _integer,
    _number,
    _problem,
    _text,
)
from medcore.config.messages import _message

__all__ = [
    "Tiers",
    "EvaluationSettings",
    "ProbeSettings",
    "GradcamSettings",
    "METRICS",
    "GATE_METRICS",
    "DEFAULT_GATES",
    "RegistrySettings",
    "NotifySettings",
    "NightlySettings",
    "TaskSettings",
    "NightSettings",
    "NightBudget",
    "NIGHTLY_POLICIES",
    "SplitSettings",
    "Config",
    "DEFAULT_TIERS",
    "TIER_ORDER",
]


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
    # 3 draws fired on 3 of 16 seeds over four models on which 8 draws fired on none (decision 0016).
    sanity_draws: int = _integer(8, 1, 20, "independent randomisations per stage the model's maps are compared with")

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


# METRICS: the figures evaluation measures with an interval; GATE_METRICS: those a gate may name, each
# "higher is better"; `<metric>_low` gates the lower bound of its interval. Both declared in medcore.artefacts.
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
        default=None,
        description="registry folder, relative to the loaded config "
        "(default `registry`); MEDCORE_REGISTRY_ROOT overrides it",
    )
    # A `gates` mapping replaces the defaults as a whole (a null value drops one gate inherited via
    # `extends`), so what a model must pass is always what the file says. Stored as (figure, minimum) pairs.
    # The default is stored as is: (figure, minimum) pairs, as `_pairs` returns; the cast only states the
    # annotation pydantic validates a loaded mapping against. Readers get pairs (see medcore.nights.decision).
    gates: Mapping[GateName, _Fraction | None] = Field(
        default=cast("Mapping[GateName, float | None]", DEFAULT_GATES),
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
    recipients: tuple[str, ...] = Field(
        default=(), description="e-mail addresses; none: the report is written, not sent"
    )
    from_email: str | None = _text(None, "sender; default: the connection's `from_email` extra, else medcore@localhost")
    max_images: int = _integer(8, 0, 100, "Grad-CAM images attached (and shown inline); report.md always is")
    report_url: str | None = _text(None, "the Airflow UI's base URL, so links in the e-mail open the report page")

    _recipients = field_validator("recipients", mode="before")(_addresses)


# --- nights that build on each other ------------------------------------------------------------------
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
    probe: bool = _flag(True, "time a DenseNet121 probe (about 1 min) when no night on this CPU kind was measured")


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
        default=Path("data"),
        description="folder holding the datasets, relative to the file that sets it; MEDCORE_DATA_ROOT overrides it",
    )
    runs_root: Path = Field(
        default=Path("runs"),
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
                    message = _message(error, ("profiles", name, *error["loc"]), Config)
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
