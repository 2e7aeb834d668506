"""The champion registry's files: registry/<condition>.json and the trend rows of trend.csv."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError, field_validator

from medcore.artefacts.base import SCHEMA_VERSION, Artefact, ArtefactError, Open, first_problem, load_artefact
from medcore.artefacts.metrics import Figures, SelectionFigures

__all__ = [
    "KeptFigures",
    "Champion",
    "HistoryEntry",
    "RegistryRecord",
    "TrendRow",
    "load_registry_record",
    "load_trend",
]


class KeptFigures(Figures):
    """The champion's test figures as the registry keeps them (KEPT_FIGURES, intervals, the tier)."""

    threshold_rule: str | None = None
    quality_tier: str | None = None


class Champion(Open):
    """A candidate, and once promoted the champion (registry.candidate_from, then the copies it owns)."""

    run_id: str
    condition: str | None = None
    profile: str
    model_path: str | None = None
    contract_path: str | None = None
    split_path: str | None = None
    metrics: KeptFigures = Field(default_factory=KeptFigures)
    selection: SelectionFigures | None = None
    test_split_fingerprint: str | None = None
    selection_split_fingerprint: str | None = None
    dataset_fingerprint: str | None = None
    config_digest: str | None = None
    code_version: str | None = None
    mode: str | None = None
    warm_start_trained_on: str | None = None
    warm_starts: int = 0
    source_model_path: str | None = None
    card_path: str | None = None
    model_sha256: str | None = None
    trained_on_path: str | None = None
    promoted: str | None = None
    reason: str | None = None


class HistoryEntry(Open):
    """One night's decision for a condition, newest first in the record."""

    time: str | None = None
    run_id: str | None = None
    decision: str
    reason: str | None = None
    profile: str | None = None
    roc_auc: float | None = None
    decision_record: dict[str, Any] = Field(default_factory=dict)
    trend_row: dict[str, Any] | None = None


class RegistryRecord(Artefact):
    """registry/<condition>.json: the champion, the one before it, the decisions, the best on current data."""

    FILE: ClassVar[str] = "<condition>.json"
    condition: str
    champion: Champion | None = None
    previous_champion: Champion | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    best: dict[str, Any] | None = None
    test_split: dict[str, Any] | None = None
    updated: str | None = None


class TrendRow(Open):
    """One night of a condition's trend.csv (nights.trend.TREND_COLUMNS, in that order; a test checks it).

    A CSV has no room for a version per row: the columns are the version, and `schema_version` is not a column.
    """

    schema_version: int = Field(default=SCHEMA_VERSION, exclude=True)
    night: str | None = None
    run_id: str | None = None
    decision: str | None = None
    policy: str | None = None
    mode: str | None = None
    candidate: str | None = None
    selection_split: str | None = None
    test_split: str | None = None
    challenger_selection_auc: float | None = None
    challenger_selection_low: float | None = None
    challenger_selection_high: float | None = None
    champion_selection_auc: float | None = None
    champion_selection_low: float | None = None
    champion_selection_high: float | None = None
    paired_selection_low: float | None = None
    paired_selection_high: float | None = None
    best_selection_auc: float | None = None
    challenger_test_auc: float | None = None
    challenger_test_low: float | None = None
    challenger_test_high: float | None = None
    champion_test_auc: float | None = None
    champion_test_low: float | None = None
    champion_test_high: float | None = None
    test_nights: int | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        """An empty CSV cell is no value (pandas writes None and NaN as empty)."""
        return None if value == "" else value

    @field_validator("test_nights", mode="before")
    @classmethod
    def _whole_float(cls, value: Any) -> Any:
        """A column with an empty cell is float to pandas, so a count may read back as "3.0"."""
        if isinstance(value, str) and value.endswith(".0") and value[:-2].isdigit():
            return value[:-2]
        return value


def load_registry_record(path: str | Path) -> RegistryRecord:
    """A condition's registry record (registry/<condition>.json)."""
    return load_artefact(RegistryRecord, path)


def load_trend(path: str | Path) -> list[TrendRow]:
    """A condition's trend.csv, one TrendRow per night; an ArtefactError names the file, the row and the field."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise ArtefactError(f"{path}: missing") from None
    result = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            result.append(TrendRow.model_validate(row))
        except ValidationError as exc:
            raise ArtefactError(f"{path}: line {number}: {first_problem(exc)}") from None
    return result
