"""Shared helpers: loading a result, formatting a figure, the line that says which command makes a missing file."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


MAKES = {
    "nightly": "`make bench` (or `.venv/bin/python bench/nightly.py`)",
    "train_throughput": "`.venv/bin/python bench/train_throughput.py`",
    "train_pairs": "`make bench` (or `.venv/bin/python bench/train_throughput.py --pairs 5 --pair-threads 1 --pair-together`)",
    "stages_speed": "`.venv/bin/python bench/gradcam_speed.py`",
    "validate_speed": "`.venv/bin/python bench/validate_speed.py`",
    "overhead": "`.venv/bin/python bench/overhead.py`",
    "peak": "`.venv/bin/python bench/peak.py`",
    "precision_profile": "`.venv/bin/python bench/precision_profile.py`",
    # The same three measurements on a CPU with AMX (machines of this kind differ; each keeps its own files).
    "peak_amx": "`.venv/bin/python bench/peak.py --out peak_amx` on a CPU with AMX",
    "precision_profile_amx": "`.venv/bin/python bench/precision_profile.py --out precision_profile_amx` on a CPU with AMX",
    "train_throughput_amx": "`.venv/bin/python bench/train_throughput.py --out train_throughput_amx` on a CPU with AMX",
    "nightly_shared": "`make bench` (`medcore pretrain`, then `bench/nightly.py --config configs/shared-backbone.yaml "
    "--shared-backbone <its registry>/shared_backbone.keras --name nightly_shared`)",
    "nights": "`make bench` (or `.venv/bin/python bench/nights.py`)",
    "deletion_baselines": "`make bench` (or `.venv/bin/python bench/deletion_baselines.py`, after a night)",
    "resize": "`make bench` (or `.venv/bin/python bench/resize.py`)",
    "border_erase": "`.venv/bin/python bench/border_erase.py` (trains pneumonia standard twice on the real sets)",
    "nightly_following": "`make bench` (or `.venv/bin/python bench/nightly.py --config configs/following-night.yaml "
    "--after bench/results/nightly.json --name nightly_following`)",
}


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _missing(name: str) -> str:
    return f"_Not measured yet: {MAKES[name]} writes `bench/results/{name}.json`._\n"


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _load_lines(result: dict[str, Any], tail: str) -> list[str]:
    """The load average before and after a benchmark (a blank line, then one sentence), or nothing if unrecorded."""
    load = result.get("load_before"), result.get("load_after")
    if not all(load):
        return []
    before, after = ("/".join(f"{v:.1f}" for v in values) for values in load)
    return ["", f"Load average (1/5/15 min) before {before}, after {after}; {tail}."]


def _with_interval(value: Any, interval: dict[str, Any] | None) -> str:
    if value is None:
        return "–"
    if not interval or interval.get("low") is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({interval['low']:.3f}–{interval['high']:.3f})"


def _median_of(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _cpu_id(m: dict[str, Any]) -> str:
    return f" ({m['cpu_id']})" if m.get("cpu_id") else ""  # recorded since two AMD kinds shared one name


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _spread(value: float | None, low: float | None, high: float | None) -> str:
    return "–" if value is None else f"{value:.3f} ({low:.3f}–{high:.3f})"


def _rate(row: dict[str, Any] | None, digits: int = 1) -> str:
    """img/s with the min-max of its steady epochs."""
    if not row:
        return "–"
    return (
        f"{row['images_per_second']:.{digits}f} ({row['min']:.{digits}f}–{row['max']:.{digits}f})"
        if row.get("min") is not None
        else f"{row['images_per_second']:.{digits}f}"
    )


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"
