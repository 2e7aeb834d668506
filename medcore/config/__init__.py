"""The typed, validated configuration: conditions, profiles and run settings from one YAML file.

Loaded once per process through `load_config`; every error is one line naming the file and the key
path. The package is split along its seams:

- `fields`: the kinds of setting (integer, number, flag, text, choice) every declaration uses;
- `checks`: every finding code validation can report, its policies, and the dataset-check settings;
- `conditions`: conditions and profiles; `schema`: the run settings and `Config`, the whole file;
- `loading` and `messages`: reading the YAML (with `extends`) and one-line errors naming key and file;
- `env`: the `MEDCORE_*` environment variables, one pydantic-settings class read through `settings()`;
- `reference`: docs/configuration.md, generated from the declarations.

The classes are pydantic *dataclasses* (not BaseModels) so that code building a `Profile("p",
image_size=32)` by hand, or a variant with `dataclasses.replace`, keeps working and is validated too.
"""

from __future__ import annotations

from medcore.config.checks import (
    CHECKS,
    DEFAULT_FIX,
    MIN_PER_CLASS_DEFAULT,
    POLICIES,
    CheckRule,
    SplitMinimum,
    ValidationSettings,
)
from medcore.config.conditions import WEIGHT_SOURCES, Augmentation, Condition, Profile, Progressive, canonical_label
from medcore.config.env import Settings, settings
from medcore.config.fields import DEFAULT_CONFIG
from medcore.config.loading import MAX_CONFIG_BYTES, load_config
from medcore.config.reference import config_reference, reference_document
from medcore.config.schema import (
    DEFAULT_GATES,
    DEFAULT_TIERS,
    GATE_METRICS,
    METRICS,
    NIGHTLY_POLICIES,
    TIER_ORDER,
    Config,
    EvaluationSettings,
    GradcamSettings,
    NightBudget,
    NightlySettings,
    NightSettings,
    NotifySettings,
    ProbeSettings,
    RegistrySettings,
    SplitSettings,
    TaskSettings,
    Tiers,
)

__all__ = [
    "Augmentation",
    "CHECKS",
    "CheckRule",
    "Condition",
    "Config",
    "DEFAULT_CONFIG",
    "DEFAULT_FIX",
    "DEFAULT_GATES",
    "DEFAULT_TIERS",
    "EvaluationSettings",
    "GATE_METRICS",
    "GradcamSettings",
    "MAX_CONFIG_BYTES",
    "METRICS",
    "MIN_PER_CLASS_DEFAULT",
    "NIGHTLY_POLICIES",
    "NightBudget",
    "NightSettings",
    "NightlySettings",
    "NotifySettings",
    "POLICIES",
    "ProbeSettings",
    "Profile",
    "Progressive",
    "RegistrySettings",
    "Settings",
    "SplitMinimum",
    "SplitSettings",
    "TIER_ORDER",
    "TaskSettings",
    "Tiers",
    "ValidationSettings",
    "WEIGHT_SOURCES",
    "canonical_label",
    "config_reference",
    "load_config",
    "reference_document",
    "settings",
]
