"""The `MEDCORE_*` environment variables, declared once: what each means and what applies when it is unset.

Read at call time (`settings()` builds a fresh object, a few microseconds), so a test's `monkeypatch.setenv`
and the adapter's `os.environ.setdefault("MEDCORE_THREADS", ...)` apply to the next read. An empty value
means unset, as `os.environ.get(name) or default` did, except `MEDCORE_TEMPLATES` (an empty path is the
current folder) and `MEDCORE_PROBE` (only `0` turns the probe off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from medcore.errors import ConfigError

__all__ = ["Settings", "settings", "DEFAULT_SCHEDULE"]

DEFAULT_SCHEDULE = "0 1 * * *"  # 01:00 UTC every night


class Settings(BaseSettings):
    """Every `MEDCORE_<NAME>` variable medcore reads, as field `<name>`; other `MEDCORE_*` names are ignored."""

    model_config = SettingsConfigDict(env_prefix="MEDCORE_", extra="ignore", frozen=True)

    config: str | None = Field(None, description="the YAML config (default: conditions.yaml)")
    data_root: Path | None = Field(None, description="overrides the config's `data_root`")
    runs_root: Path | None = Field(None, description="overrides the config's `runs_root`")
    registry_root: Path | None = Field(None, description="overrides the config's `registry.root`")
    group_key: str | None = Field(None, description="the key DICOM ids are hashed with (else `<registry>/group.key`)")
    threads: int = Field(0, description="TensorFlow intra-op threads where the profile says 0 (0: TF's default)")
    inter_threads: int = Field(0, description="TensorFlow inter-op threads where the profile says 0")
    probe: bool = Field(True, description="`0`: the night planner never runs the speed probe (only `0`)")
    templates: Path | None = Field(None, description="the report's Jinja2 templates (default: templates/)")
    schedule: str = Field(DEFAULT_SCHEDULE, description="the DAG's cron expression, in UTC")
    retry_delay_seconds: int | None = Field(None, description="first retry delay of chain tasks (tests)")

    @field_validator("config", "data_root", "runs_root", "registry_root", "group_key", "schedule", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        if value == "":
            raise PydanticUseDefault()
        return value

    @field_validator("threads", "inter_threads", mode="before")
    @classmethod
    def _count(cls, value: Any) -> int:
        return int(value or 0)  # as `int(os.environ.get(name) or 0)`: " 4 " is 4, "" is 0, "4.0" an error

    @field_validator("retry_delay_seconds", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> int | None:
        return int(value) if value else None

    @field_validator("probe", mode="before")
    @classmethod
    def _probe(cls, value: Any) -> bool:
        return value != "0" if isinstance(value, str) else bool(value)


def settings() -> Settings:
    """The `MEDCORE_*` variables as they are now; a malformed one is a one-line ConfigError naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = "MEDCORE_" + str(error["loc"][0]).upper() if error["loc"] else "MEDCORE_*"
        raise ConfigError(f"environment: {name}: {' '.join(str(error['msg']).split())}") from None
