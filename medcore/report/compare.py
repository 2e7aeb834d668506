"""This run against the others: each model against the previous run and the champion, and the first screen's
one line per condition with its trend over recent runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medcore.jsonio import read_json
from medcore.layout import RunLayout
from medcore.report.advice import TREND_RUNS, overview_row

__all__ = ["champions_of", "conditions_overview"]


def _maybe(path: Path) -> Any:
    return read_json(path) if path.exists() else None


def champions_of(
    run: RunLayout, info: dict[str, Any], models: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Each condition's champion decision (from promotion.json, else the registry as it stands) and the run's
    promotion record; each model also gets its change since the previous run and against the champion before."""
    promotion = _maybe(run.promotion_json)
    decisions = (promotion or {}).get("conditions") or {}
    conditions = list(dict.fromkeys(m["condition"] for m in models))
    # Without promotion.json (promote failed or never ran) the registry itself still says who the champion is.
    fallback = {} if promotion else _registry_champions(info, conditions)
    earlier = _earlier_runs(run, info)
    for m in models:
        m["previous"] = _versus_previous(m, earlier)
        before = (
            (decisions.get(m["condition"]) or {}).get("champion_before") if promotion else fallback.get(m["condition"])
        )
        m["versus_champion"] = _versus_champion(m, before)
    champions = []
    for condition in conditions:
        decision = decisions.get(condition)
        if decision is None:
            decision = {
                "decision": "not decided",
                "champion": fallback.get(condition),
                "reason": "the promote stage did not run (or failed) for this run; the registry is unchanged",
            }
        champions.append({"condition": condition, "candidate": None, "champion_before": None, **decision})
    return champions, promotion


def _registry_champions(info: dict[str, Any], conditions: Sequence[str]) -> dict[str, Any]:
    from medcore.config import load_config
    from medcore.errors import MedcoreError
    from medcore.nights.registry import champion_summary, read_record, registry_of

    try:
        config = load_config(info["config"])
        registry = registry_of(config)
        return {c: champion_summary(read_record(registry, c).get("champion")) for c in conditions}
    except (MedcoreError, OSError, ValueError, KeyError):
        return {}  # the report must render even if the config moved since the run


def _earlier_runs(run: RunLayout, info: dict[str, Any], limit: int = 30) -> list[RunLayout]:
    """Runs in the same runs folder that started before this one, newest first."""
    try:
        started = dt.datetime.fromisoformat(info["started"])
        folders = [f for f in Path(run.runs_root).iterdir() if f.is_dir() and f != run.root]
    except (KeyError, ValueError, OSError):
        return []
    found = []
    for folder in folders:
        try:
            other = read_json(folder / "run.json")
            when = dt.datetime.fromisoformat(other["started"])
            if when < started:
                layout = RunLayout(folder.parent, other["run_id"])
                if layout.root == folder:
                    found.append((when, layout))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a run folder, or a half-written one: nothing to compare with
    return [layout for _, layout in sorted(found, key=lambda pair: pair[0], reverse=True)[:limit]]


_COMPARED = ("roc_auc", "accuracy", "recall", "specificity")


def _versus_previous(m: dict[str, Any], earlier: list[RunLayout]) -> dict[str, Any] | None:
    """The latest earlier run in which this (condition, profile) succeeded, and the change since."""
    from medcore.nights.registry import figure, succeeded, test_split_fingerprint

    for other in earlier:
        paths = other.model(m["condition"], m["profile"])
        if not succeeded(paths):
            continue
        then = read_json(paths.metrics_json)
        now = m["metrics"] or {}
        changes = {}
        for name in _COMPARED:
            old, new = figure(then, name), figure(now, name)
            changes[name] = {
                "before": old,
                "after": new,
                "delta": new - old if old is not None and new is not None else None,
            }
        return {
            "run_id": other.run_id,
            "changes": changes,
            "roc_auc": figure(then, "roc_auc"),
            "delta_roc_auc": changes["roc_auc"]["delta"],
            "same_test_split": test_split_fingerprint(paths.split_csv) == m["test_split"],
        }
    return None


def _versus_champion(m: dict[str, Any], champion: dict[str, Any] | None) -> dict[str, Any] | None:
    from medcore.nights.registry import figure

    if not champion:
        return None
    # Re-scored tonight on this model's own test images: the difference compares models, not data.
    versus = (m["metrics"] or {}).get("versus_champion") or {}
    if versus.get("test") and versus.get("champion") == f"{champion['run_id']}/{champion['profile']}":
        return {
            **champion,
            "roc_auc": versus["test"]["champion_auc"],
            "delta_roc_auc": versus["test"]["delta"],
            "same_test_split": True,
            "rescored": True,
        }
    new = figure(m["metrics"] or {}, "roc_auc")
    old = champion.get("roc_auc")
    return {
        **champion,
        "delta_roc_auc": new - old if new is not None and old is not None else None,
        "same_test_split": m["test_split"] is not None and m["test_split"] == champion.get("test_split_fingerprint"),
    }


def _best_auc(run: RunLayout, condition: str) -> float | None:
    """The best test ROC AUC of `condition` among the models that succeeded in `run`."""
    from medcore.nights.registry import figure, succeeded

    try:
        jobs = read_json(run.run_json)["jobs"]
    except (OSError, ValueError, KeyError):
        return None
    values = [
        figure(read_json(paths.metrics_json), "roc_auc")
        for paths in (run.model(condition, job["profile"]) for job in jobs if job.get("condition") == condition)
        if succeeded(paths)
    ]
    return max((v for v in values if v is not None), default=None)


def conditions_overview(
    run: RunLayout, info: dict[str, Any], models: list[dict[str, Any]], champions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One line per condition, for the first screen: status, champion with its test ROC AUC and interval, tonight's
    change against the previous run, the trend over recent runs, and whatever needs a person (else "nothing")."""
    earlier = _earlier_runs(run, info, limit=TREND_RUNS - 1)
    rows = []
    for c in champions:
        mine = [m for m in models if m["condition"] == c["condition"]]
        history = [_best_auc(other, c["condition"]) for other in reversed(earlier)]
        rows.append(overview_row(c, mine, info["run_id"], history))
    return rows
