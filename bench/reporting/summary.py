"""BENCHMARKS.md: one table per question the benchmarks answer, each figure with its CPU and date."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.reporting.accuracy import TARGETS, _target_verdict
from bench.reporting.common import _with_interval
from bench.reporting.fit import cpu_label
from bench.reporting.night import COLD_NIGHT_MINUTES, FOLLOWING_NIGHT_MINUTES
from bench.reporting.pairs import PAIR_TARGET, pair_verdict


def stamp(result: dict[str, Any]) -> str:
    """`| CPU | date |` cells of one result."""
    m = result.get("machine") or {}
    return f"| {cpu_label(m)} | {m.get('date', '')[:10]} |"


def targets_table(nightly: dict[str, Any]) -> list[str]:
    """Each condition's best profile against its target test ROC AUC."""
    best: dict[str, dict[str, Any]] = {}
    for m in nightly["models"]:
        auc = (m.get("test") or {}).get("roc_auc")
        if auc is not None and auc > (best.get(m["condition"], {}).get("test") or {}).get("roc_auc", -1):
            best[m["condition"]] = m
    lines = ["| condition | best profile | test AUC (95 % CI) | target | CPU | date |", "|---|---|---|---|---|---|"]
    for condition, m in best.items():
        auc, interval = m["test"]["roc_auc"], m["intervals"].get("roc_auc")
        verdict = _target_verdict(condition, auc, interval) if condition in TARGETS else "interval only"
        lines.append(f"| {condition} | {m['profile']} | {_with_interval(auc, interval)} | {verdict} {stamp(nightly)}")
    return lines


def nightly_rows(loaded: dict[str, dict[str, Any] | None]) -> list[str]:
    """The shipped cold and following nights under the scheduler, wall against their budgets."""
    lines = ["| night | wall | budget | CPU busy | CPU | date |", "|---|--:|--:|--:|---|---|"]
    for name, budget in (("nightly", COLD_NIGHT_MINUTES), ("nightly_following", FOLLOWING_NIGHT_MINUTES)):
        result = loaded.get(name)
        if result:
            wall = result["run"]["wall_seconds"] / 60
            lines.append(
                f"| `{name}` | {wall:.1f} min | {budget} min | {result['run']['cpu_busy']:.0%} {stamp(result)}"
            )
    return lines


def pairs_rows(pairs: dict[str, Any]) -> list[str]:
    """Pipeline / plain Keras per shipped size, from pairs of fresh processes."""
    lines = [
        f"| size | pipeline / plain (pairs min–max) | ≥ {PAIR_TARGET} | per CPU-second | CPU | date |",
        "|--:|---|---|---|---|---|",
    ]
    for size, r in pairs["sizes"].items():
        verdict = pair_verdict(r["ratio_min"], r["ratio_max"], r["n_pairs"])
        cpu = f"{r['cpu_ratio']:.3f}" if r.get("cpu_ratio") is not None else "–"
        lines.append(
            f"| {size} px | {r['ratio']:.3f} ({r['ratio_min']:.3f}–{r['ratio_max']:.3f}) | {verdict} | {cpu} "
            f"{stamp(pairs)}"
        )
    return lines


def policy_rows(nights: dict[str, Any]) -> list[str]:
    """Continue against retrain over four nights: CPU minutes and the paired final AUC difference."""
    policies = nights["policies"]
    ratio = policies["continue"]["cpu_minutes"] / policies["retrain"]["cpu_minutes"]
    lines = [
        "| condition | CPU continue / retrain | continue − retrain AUC (95 % CI) | CPU | date |",
        "|---|--:|---|---|---|",
    ]
    for condition, d in (nights.get("final_paired") or {}).items():
        lines.append(
            f"| {condition} | {ratio:.2f}× | {d['delta']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}) {stamp(nights)}"
        )
    return lines


def resize_rows(resize: dict[str, Any]) -> list[str]:
    """Pad against squash, paired on the same test studies."""
    lines = ["| condition | unit | pad − squash AUC (95 % CI) | CPU | date |", "|---|---|---|---|---|"]
    for condition, paired in (resize.get("paired") or {}).items():
        for unit in ("image", "study"):
            d = (paired or {}).get(unit)
            if d:
                lines.append(
                    f"| {condition} | {unit} | {d['delta']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}) {stamp(resize)}"
                )
    return lines


def planner_rows(results: Path, night_cost: dict[str, Any]) -> list[str]:
    """The planner's prediction of recorded nights (bench/night_cost.py's backtests)."""
    lines = ["| night | how | predicted / measured | error | CPU | date |", "|---|---|---|--:|---|---|"]
    for t in night_cost["backtests"]:
        path = results / t["night"]
        night = json.loads(path.read_text()) if path.exists() else {}
        lines.append(
            f"| `{t['night']}` | {t['kind']} | {t['night_predicted']} / {t['night_actual']} min "
            f"| {t['night_error']:+.1%} {stamp(night)}"
        )
    return lines


def overhead_rows(overhead: dict[str, Any]) -> list[str]:
    """The same workload as one `medcore run` and as a DAG run under the scheduler."""
    modes = overhead["modes"]
    wall = [f"{modes[m]['wall_seconds']:.0f} s" if m in modes else "–" for m in ("medcore_run", "scheduler")]
    return [
        "| `medcore run` | scheduler | ratio (target ≤ 1.10) | CPU | date |",
        "|--:|--:|--:|---|---|",
        f"| {wall[0]} | {wall[1]} | {overhead['ratio']:.2f} {stamp(overhead)}",
    ]
