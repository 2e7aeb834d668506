"""The building blocks every settings class is declared with: field kinds, the shared pydantic config, keyed errors.

A setting is declared once, as a pydantic field with its default, bounds and a one-line description; the
reference in docs/configuration.md is generated from these declarations (medcore.config.reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic_core import PydanticCustomError

__all__ = ["DEFAULT_CONFIG", "NightlyPolicy", "WarmStartMethod", "BatchNormHandling"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "conditions.yaml"
NightlyPolicy = Literal["auto", "retrain", "continue"]  # auto: continue once a champion exists, else retrain
WarmStartMethod = Literal["continue", "shrink_perturb"]  # medcore.model.warmstart
BatchNormHandling = Literal["reestimate", "keep"]
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
