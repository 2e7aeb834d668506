"""The MEDCORE_* environment variables: one settings class, read at call time, empty meaning unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcore.config import Settings, settings
from medcore.config.env import DEFAULT_SCHEDULE
from medcore.errors import ConfigError

NAMES = [f"MEDCORE_{name.upper()}" for name in Settings.model_fields]


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


def test_every_variable_has_a_default_and_a_description():
    """Unset, each variable takes the default the code it replaced used; each says what it means."""
    now = settings()
    assert (now.config, now.data_root, now.runs_root, now.registry_root, now.group_key) == (None,) * 5
    assert (now.threads, now.inter_threads, now.probe, now.retry_delay_seconds) == (0, 0, True, None)
    assert now.schedule == DEFAULT_SCHEDULE == "0 1 * * *" and now.templates is None
    assert all(info.description for info in Settings.model_fields.values())
    assert len(NAMES) == 11


@pytest.mark.parametrize("name", ["CONFIG", "DATA_ROOT", "RUNS_ROOT", "REGISTRY_ROOT", "GROUP_KEY", "SCHEDULE"])
def test_an_empty_value_is_unset(monkeypatch, name):
    """`MEDCORE_X=` means what an unset variable means, as `os.environ.get(x) or default` did."""
    monkeypatch.setenv(f"MEDCORE_{name}", "")
    assert getattr(settings(), name.lower()) == Settings.model_fields[name.lower()].default


def test_values_are_read_when_asked_for(monkeypatch):
    """A variable set after import applies to the next read (tests and the adapter set them late)."""
    assert settings().threads == 0
    monkeypatch.setenv("MEDCORE_THREADS", " 3 ")
    monkeypatch.setenv("MEDCORE_RUNS_ROOT", "~/runs")
    monkeypatch.setenv("MEDCORE_RETRY_DELAY_SECONDS", "1")
    now = settings()
    assert (now.threads, now.runs_root, now.retry_delay_seconds) == (3, Path("~/runs"), 1)
    monkeypatch.setenv("MEDCORE_THREADS", "")
    assert settings().threads == 0


@pytest.mark.parametrize(("value", "probe"), [("0", False), ("1", True), ("", True), ("false", True), ("no", True)])
def test_only_zero_turns_the_probe_off(monkeypatch, value, probe):
    """`MEDCORE_PROBE` was compared with "0": every other value, empty included, leaves the probe on."""
    monkeypatch.setenv("MEDCORE_PROBE", value)
    assert settings().probe is probe


def test_an_empty_templates_folder_is_the_current_folder(monkeypatch):
    """`MEDCORE_TEMPLATES=` was `Path("")`, the current folder; it stays so."""
    monkeypatch.setenv("MEDCORE_TEMPLATES", "")
    assert settings().templates == Path("")


def test_a_malformed_variable_is_one_line_naming_it(monkeypatch):
    """A count that is not an integer is a ConfigError naming the variable, on one line."""
    monkeypatch.setenv("MEDCORE_THREADS", "four")
    with pytest.raises(ConfigError, match=r"^environment: MEDCORE_THREADS: ") as caught:
        settings()
    assert "\n" not in str(caught.value)


def test_other_medcore_variables_are_ignored(monkeypatch):
    """Docker's MEDCORE_*_HOST and friends are not medcore's settings and are not errors."""
    monkeypatch.setenv("MEDCORE_WORKER_QUEUES", "default,training")
    assert settings().threads == 0
