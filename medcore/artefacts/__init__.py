"""Typed artefacts: the files one stage writes and another reads, as pydantic models with a loader each.

Stages still write plain dicts (jsonio.write_json); these models say what those dicts hold, so a reader
gets an object whose fields it can trust, and a file that does not fit fails at once, in one line that
names the file and the first bad field. Files carry open-ended keys (versions, settings, per-split
counts), so every model allows extra keys: a file that has more than the model names still loads.

Each file has a `schema_version`. Files written before it existed have none and are read as version 1;
a file from a newer medcore (a higher version) is refused, not misread.

The metric names are declared once, in `names`; config, evaluation, the registry and the tests' fakes
import them (or a subset derived there) from this package. The models live by owner: `metrics`
(metrics.json), `stages` (model.json, training.json, validation.json, nightly.json, summary.json) and
`registry` (the registry record, the trend row); `base` has what they share.

Only pydantic and medcore.errors are imported: every stage may read an artefact, so this package must
not import a stage (tests/test_layers.py).
"""

from __future__ import annotations

from medcore.artefacts.base import SCHEMA_VERSION, Artefact, ArtefactError, load_artefact
from medcore.artefacts.metrics import (
    Bootstrap,
    Figures,
    ImageMetrics,
    Interval,
    Metrics,
    PairedComparison,
    Quality,
    SelectionFigures,
    VersusChampion,
    load_metrics,
)
from medcore.artefacts.names import GATE_METRICS, KEPT_FIGURES, METRICS, SELECTION_FIGURES
from medcore.artefacts.registry import (
    Champion,
    HistoryEntry,
    KeptFigures,
    RegistryRecord,
    TrendRow,
    load_registry_record,
    load_trend,
)
from medcore.artefacts.stages import (
    Finding,
    ModelContract,
    NightlyPlan,
    RunSummary,
    TrainingRecord,
    ValidationSummary,
    load_contract,
    load_nightly,
    load_summary,
    load_training,
    load_validation,
)

__all__ = [
    "METRICS",
    "GATE_METRICS",
    "SELECTION_FIGURES",
    "KEPT_FIGURES",
    "SCHEMA_VERSION",
    "ArtefactError",
    "load_artefact",
    "Artefact",
    "Interval",
    "Figures",
    "Quality",
    "Bootstrap",
    "ImageMetrics",
    "SelectionFigures",
    "PairedComparison",
    "VersusChampion",
    "Metrics",
    "ModelContract",
    "TrainingRecord",
    "Finding",
    "ValidationSummary",
    "NightlyPlan",
    "RunSummary",
    "KeptFigures",
    "Champion",
    "HistoryEntry",
    "RegistryRecord",
    "TrendRow",
    "load_contract",
    "load_training",
    "load_metrics",
    "load_validation",
    "load_nightly",
    "load_summary",
    "load_registry_record",
    "load_trend",
]
