"""Does the night fit its budget? Every result with a `night` block: planned against took, per chain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cpu_label(m: dict[str, Any], planner_cpu: str = "") -> str:
    """The CPU a result was measured on: name, family/model where recorded, and its widest matrix unit (or the
    ISA oneDNN was held to, when the planner's CPU id says `->onednn_avx2`)."""
    flags = set(m.get("flags") or [])
    kind = "AMX" if "amx_tile" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "AVX2"
    if "->onednn_" in planner_cpu:
        kind = f"{kind} emulating {planner_cpu.split('->onednn_')[1].upper()} (ONEDNN_MAX_CPU_ISA)"
    cpu_id = m.get("cpu_id") or ""
    family = " ".join(cpu_id.split()[:4])  # "family 23 model 49": the stepping tells no kind apart
    return f"{m.get('cpu', '?')}{f' {family}' if family else ''}, {kind}"


def night_results(results: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file stem, result) for every result whose `night` block records a budgeted night, by file name."""
    found = []
    for path in sorted(results.glob("*.json")):
        result = json.loads(path.read_text())
        night = result.get("night")
        if isinstance(night, dict) and "budget_minutes" in night and "took_minutes" in night:
            found.append((path.stem, result))
    return found


def _worst_chain(night: dict[str, Any]) -> dict[str, Any] | None:
    chains = [c for c in night.get("chains") or [] if c.get("error") is not None]
    return max(chains, key=lambda c: abs(c["error"])) if chains else None


def fit_table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """One row per budgeted night: CPU, budget, planned, took, the night's error and its worst chain's."""
    if not runs:
        return "_Not measured yet: a night run with `night.budget_minutes` (`bench/nightly.py`) records one._\n"
    lines = [
        "| result | CPU | date | budget | planned | took | error | worst chain error |",
        "|---|---|---|--:|--:|--:|--:|---|",
    ]
    for stem, result in runs:
        night, m = result["night"], result.get("machine") or {}
        worst = _worst_chain(night)
        error = night["planned_minutes"] / night["took_minutes"] - 1
        worst_text = f"{worst['label']} {worst['error']:+.1%}" if worst else "–"
        lines.append(
            f"| `{stem}` | {cpu_label(m, night.get('cpu_id', ''))} | {m.get('date', '')[:10]} "
            f"| {night['budget_minutes']:.0f} min | {night['planned_minutes']:.1f} min | {night['took_minutes']:.1f} min "
            f"| {error:+.1%} | {worst_text} |"
        )
    notes = [f"- `{stem}`: {result['night']['note']}" for stem, result in runs if result["night"].get("note")]
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def chains_table(stem: str, result: dict[str, Any]) -> str:
    """One budgeted night's chains, one line: each chain's error (budget, planned and took: the summary's row)."""
    night = result["night"]
    errors = ", ".join(f"{c['label']} {c['error']:+.1%}" for c in night.get("chains") or [])
    return f"- `{stem}`: full plan {night.get('full_plan_minutes', '–')} min; chain errors: {errors or '–'}.\n"
