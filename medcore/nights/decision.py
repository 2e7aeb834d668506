"""The champion decision, pure: which model of tonight's run may replace a condition's champion, and why.

Decisions never read the test split. The candidate is the run's best successful model of a
condition by its selection (val) figures, and it replaces the champion only if

1. it reaches every absolute gate of `registry.gates` on the selection split, and
2. the champion, re-scored tonight on the very same selection images, is not meaningfully better:
   the lower bound of the paired bootstrap interval of (challenger - best) ROC AUC is above
   `-registry.margin`, where "best" is the best figure any champion reached on these images. A
   champion that slipped below the best has used up that much of the margin, so no sequence of
   small losses can add up to more than one margin.

A run whose models all failed or were skipped, or whose candidate fails a gate or is worse, never
touches the champion. Nothing here reads or writes a file: `medcore.nights.registry` gathers tonight's
models, asks `promotion` for the outcome, and applies it to the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from medcore.config import TIER_ORDER, RegistrySettings

__all__ = [
    "PROMOTED",
    "KEPT",
    "NO_CHAMPION",
    "Decision",
    "Tonight",
    "Promotion",
    "figure",
    "interval",
    "check_gates",
    "pick_candidate",
    "champion_summary",
    "champion_id",
    "decide",
    "next_best",
    "promotion",
]

PROMOTED, KEPT, NO_CHAMPION = "promoted", "kept champion", "no champion"


@dataclass(frozen=True)
class Decision:
    """One condition's decision: PROMOTED, KEPT or NO_CHAMPION, the sentence why, and the figures it rests on
    (gates, the paired comparison, margin, best selection ROC AUC, delta and the lower bound versus the best)."""

    decision: str
    reason: str
    figures: dict[str, Any]

    def as_record(self) -> dict[str, Any]:
        """The decision as promotion.json and the registry's history keep it: the figures, then decision and reason."""
        return {**self.figures, "decision": self.decision, "reason": self.reason}


@dataclass(frozen=True)
class Tonight:
    """What tonight's run holds for one condition, as read from its files."""

    candidates: list[dict[str, Any]]  # one per model that succeeded (`registry.candidate_from`), in plan order
    failed: list[str] = field(default_factory=list)  # profiles that did not succeed
    skipped: str | None = None  # why the night skipped the condition (nothing changed), if it did
    plan: dict[str, Any] = field(default_factory=dict)  # the chains' nightly.json (policy, mode)


@dataclass(frozen=True)
class Promotion:
    """Tonight's outcome for one condition, before any file is touched: the decision, its full record (without
    the champion after it, which the registry's copies decide), the candidate, the new best figure and test-split
    count, and the trend row."""

    decision: Decision
    record: dict[str, Any]
    candidate: dict[str, Any] | None
    best: dict[str, Any] | None
    test_split: dict[str, Any] | None
    trend_row: dict[str, Any]


def interval(metrics: dict[str, Any], name: str) -> tuple[float, float] | None:
    """The (low, high) interval of `name`, whether stored as {"low", "high"} or as a pair; else None."""
    value = (metrics.get("intervals") or {}).get(name)
    if isinstance(value, dict) and value.get("low") is not None and value.get("high") is not None:
        return float(value["low"]), float(value["high"])
    if isinstance(value, (list, tuple)) and len(value) == 2 and None not in value:
        return float(value[0]), float(value[1])
    return None


def figure(metrics: dict[str, Any], name: str) -> float | None:
    """A gate's figure: a metric, or `<metric>_low` for the lower bound of its interval."""
    if name.endswith("_low"):
        bounds = interval(metrics, name[:-4])
        return bounds[0] if bounds else None
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _gate_pairs(settings: RegistrySettings) -> Sequence[tuple[str, float]]:
    """`settings.gates` as stored: its after-validator (and its default) hold (figure, minimum) pairs, not the
    mapping its annotation validates a loaded config against. A cast only: typing, no conversion."""
    return cast("Sequence[tuple[str, float]]", settings.gates)


def check_gates(
    metrics: dict[str, Any], gates: Sequence[tuple[str, float]], min_tier: str | None = None
) -> list[dict[str, Any]]:
    """One row per gate: name, minimum, the candidate's value, passed. A missing figure fails its gate.

    `min_tier` adds a gate on the evaluation's quality tier (best first: excellent, good, moderate,
    insufficient), which also stands for "enough test patients to judge".
    """
    rows = []
    for name, minimum in gates:
        value = figure(metrics, name)
        rows.append(
            {"gate": name, "minimum": minimum, "value": value, "passed": value is not None and value >= minimum}
        )
    if min_tier is not None:
        tier = metrics.get("quality_tier") or (metrics.get("quality") or {}).get("tier")
        rows.append(
            {
                "gate": "tier",
                "minimum": min_tier,
                "value": tier,
                "passed": tier in TIER_ORDER and TIER_ORDER.index(tier) <= TIER_ORDER.index(min_tier),
            }
        )
    return rows


def _gate_text(rows: list[dict[str, Any]]) -> str:
    """ "recall 0.420 < 0.50, roc_auc n/a < 0.70": the gates as a reader checks them."""
    parts = []
    for row in rows:
        if row["gate"] == "tier":
            parts.append(
                f"val tier {row['value'] or 'n/a'} {'at least' if row['passed'] else 'below'} {row['minimum']}"
            )
            continue
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        parts.append(f"{row['gate']} {value} {'≥' if row['passed'] else '<'} {row['minimum']:.2f}")
    return ", ".join(parts)


def pick_candidate(
    candidates: Sequence[dict[str, Any]], gates: Sequence[tuple[str, float]], min_tier: str | None = None
) -> dict[str, Any] | None:
    """The run's one candidate for a condition: gate-passing first, then best selection ROC AUC, then its lower bound.

    Selection figures come from the val split; the test split is never consulted. Ties keep plan
    order (the first profile wins), so the choice is repeatable.
    """

    def rank(c: dict[str, Any]) -> tuple:
        metrics = c.get("selection") or {}
        passes = all(r["passed"] for r in check_gates(metrics, gates, min_tier))
        return passes, figure(metrics, "roc_auc") or -1.0, figure(metrics, "roc_auc_low") or -1.0

    return max(candidates, key=rank) if candidates else None


def champion_summary(champion: dict[str, Any] | None) -> dict[str, Any] | None:
    """The few fields of a champion the report shows."""
    if not champion:
        return None
    metrics = champion.get("metrics") or {}
    return {
        "run_id": champion["run_id"],
        "profile": champion["profile"],
        "roc_auc": figure(metrics, "roc_auc"),
        "roc_auc_interval": interval(metrics, "roc_auc"),
        "metrics": metrics,
        "model_path": champion.get("model_path"),
        "promoted": champion.get("promoted"),
        "selection_roc_auc": figure(champion.get("selection") or {}, "roc_auc"),
        "test_split_fingerprint": champion.get("test_split_fingerprint"),
        "dataset_fingerprint": champion.get("dataset_fingerprint"),
    }


def champion_id(champion: dict[str, Any] | None) -> str | None:
    """`run/profile`: which champion a paired comparison was made against."""
    return f"{champion['run_id']}/{champion['profile']}" if champion else None


def decide(
    candidate: dict[str, Any] | None,
    champion: dict[str, Any] | None,
    settings: RegistrySettings,
    no_candidate_reason: str = "no model of this run succeeded",
    best: float | None = None,
) -> Decision:
    """The promotion decision for one condition: decision, a one-sentence reason, and the figures.

    `candidate["selection"]` holds its selection (val) figures, `candidate["versus_champion"]` the
    paired comparison with the champion re-scored on the same images; `best` is the best
    selection ROC AUC any champion reached on these images before tonight. Pure: reads and writes
    nothing, so every branch is a table-driven test.
    """
    figures: dict[str, Any] = {
        "gates": [],
        "paired": None,
        "margin": settings.margin,
        "best_selection_auc": best,
        "delta_roc_auc": None,
        "gap_to_best_low": None,
    }
    if candidate is None:
        if champion:
            return Decision(KEPT, f"{no_candidate_reason}; the champion stays", figures)
        return Decision(NO_CHAMPION, f"no champion yet, and {no_candidate_reason}", figures)

    name = f"{candidate['condition']}/{candidate['profile']}"
    gates = check_gates(candidate.get("selection") or {}, _gate_pairs(settings), settings.min_tier)
    figures["gates"] = gates
    failed = [g for g in gates if not g["passed"]]
    if failed:
        verdict = f"candidate {name} fails the gates on the selection split: {_gate_text(failed)}"
        if champion:
            return Decision(KEPT, f"{verdict}; the champion stays", figures)
        return Decision(NO_CHAMPION, f"no champion yet: {verdict}", figures)
    passed = f"meets every gate on the selection split ({_gate_text(gates)})" if gates else "no gates are configured"
    if not champion:
        return Decision(PROMOTED, f"first champion: {name} {passed}", figures)
    versus = candidate.get("versus_champion") or {}
    if versus.get("champion") != champion_id(champion) or not versus.get("selection"):
        return _not_paired(name, passed, versus, champion, figures)
    return _paired(name, passed, versus["selection"], settings.margin, figures)


def _not_paired(
    name: str, passed: str, versus: dict[str, Any], champion: dict[str, Any], figures: dict[str, Any]
) -> Decision:
    """A candidate without a paired comparison against this champion: the gates decide if the champion could not
    be re-scored, else the champion stays."""
    if versus.get("champion") == champion_id(champion) and versus.get("champion_missing"):
        return Decision(
            PROMOTED,
            f"{name} {passed}; the champion could not be re-scored ({versus['champion_missing']}), "
            "so the gates alone decided",
            figures,
        )
    against = versus.get("champion") or "no champion"
    return Decision(
        KEPT,
        f"{name} was not compared with champion {champion_id(champion)} on the same images "
        f"(its evaluation compared it with {against}); the champion stays",
        figures,
    )


def _paired(name: str, passed: str, paired: dict[str, Any], margin: float, figures: dict[str, Any]) -> Decision:
    """The paired rule: promoted if the lower bound of (challenger - best) is above -margin."""
    tonight = paired["champion_auc"]
    best = figures["best_selection_auc"]
    best = max(tonight, best) if best is not None else tonight
    used = best - tonight  # how far the champion already trails the best figure on these images
    gap_low = paired["low"] - used
    figures = {
        **figures,
        "paired": paired,
        "best_selection_auc": best,
        "delta_roc_auc": paired["delta"],
        "gap_to_best_low": gap_low,
    }
    evidence = (
        f"selection ROC AUC {paired['challenger_auc']:.3f} vs champion {tonight:.3f} on the same "
        f"{paired['n']} val images ({paired['delta']:+.3f}, {paired['confidence']:.0%} paired interval "
        f"{paired['low']:+.3f} to {paired['high']:+.3f})"
    )
    if used > 1e-12:
        evidence += f"; the champion already trails the best figure on these images ({best:.3f}) by {used:.3f}"
    rule = f"lower bound versus the best {gap_low:+.3f}, margin {margin:.3f}"
    if gap_low > -margin:
        return Decision(PROMOTED, f"{name}: {evidence}; {rule}; {passed}", figures)
    # Kept also when the point estimate is better: on a small val split the interval is too wide to show
    # that the challenger is not more than the margin worse, and only what is shown may replace a champion.
    return Decision(
        KEPT, f"{name} is not shown to be within the margin of the best figure: {evidence}; {rule}", figures
    )


def next_best(
    best: dict[str, Any] | None,
    fingerprint: str | None,
    champion_auc: float | None,
    decision: str,
    candidate_auc: float | None,
) -> dict[str, Any] | None:
    """The best selection ROC AUC any champion reached on the selection images `fingerprint`, after tonight.

    A new set of selection images starts afresh from the champion's figure on it. Pure.
    """
    if fingerprint is None:
        return best
    figures = [best["roc_auc"]] if best and best.get("fingerprint") == fingerprint else []
    figures += [champion_auc] if champion_auc is not None else []
    figures += [candidate_auc] if decision == PROMOTED and candidate_auc is not None else []
    return {"fingerprint": fingerprint, "roc_auc": max(figures)} if figures else None


def promotion(
    record: dict[str, Any],
    tonight: Tonight,
    condition: str,
    run_id: str,
    settings: RegistrySettings,
    now: str,
    redecided: bool = False,
) -> Promotion:
    """Tonight's outcome for `condition` against its registry `record` (as it stands, any earlier decision of
    this run already undone): the candidate, the decision, the best figure and test-split count after tonight,
    and the records to write. Pure."""
    champion, candidates = record.get("champion"), tonight.candidates
    candidate = pick_candidate(candidates, _gate_pairs(settings), settings.min_tier)
    why_none = tonight.skipped or (
        f"no model of this run succeeded ({', '.join(tonight.failed)} failed)"
        if tonight.failed
        else "this run trained no model of it"
    )
    fingerprint = (candidate or {}).get("selection_split_fingerprint")
    prior = record.get("best") if (record.get("best") or {}).get("fingerprint") == fingerprint else None
    decision = decide(candidate, champion, settings, why_none, best=(prior or {}).get("roc_auc"))
    paired = ((candidate or {}).get("versus_champion") or {}).get("selection") or {}
    best = next_best(
        record.get("best"),
        fingerprint,
        paired.get("champion_auc"),
        decision.decision,
        figure((candidate or {}).get("selection") or {}, "roc_auc"),
    )
    reported = next((c.get("test_split_fingerprint") for c in candidates), None)
    test_nights = _test_nights(record.get("test_split"), reported, run_id, now)
    shown = {
        **decision.as_record(),
        "condition": condition,
        "run_id": run_id,
        "decided": now,
        "candidate": champion_summary(candidate),
        "champion_before": champion_summary(champion),
        "versus_champion": (candidate or {}).get("versus_champion"),
        "other_candidates": [
            f"{c['profile']} (selection ROC AUC {figure(c.get('selection') or {}, 'roc_auc')})"
            for c in candidates
            if c is not candidate
        ],
        "failed_profiles": tonight.failed,
        "skipped": bool(tonight.skipped),
        "redecided": redecided,
        "best_before": record.get("best"),
        "test_split_before": record.get("test_split"),
        "best": best,
        "test_split": test_nights,
    }
    row = _trend_row(shown, candidate, now, run_id, test_nights, tonight.plan)
    return Promotion(decision, shown, candidate, best, test_nights, row)


def _test_nights(
    before: dict[str, Any] | None, fingerprint: str | None, run_id: str, now: str
) -> dict[str, Any] | None:
    """How many nights the current test split has been reported on, counting this run once."""
    if fingerprint is None:
        return before
    if before and before.get("fingerprint") == fingerprint:
        return {**before, "nights": before["nights"] + 1, "last_run": run_id}
    return {"fingerprint": fingerprint, "since": now, "nights": 1, "last_run": run_id}


def _trend_row(
    decision: dict[str, Any],
    candidate: dict[str, Any] | None,
    now: str,
    run_id: str,
    test_nights: dict[str, Any] | None,
    plan: dict[str, Any],
) -> dict[str, Any]:
    """Tonight's row of the trend: challenger and champion ROC AUC with intervals, selection and test."""
    row: dict[str, Any] = {
        "night": now,
        "run_id": run_id,
        "decision": decision["decision"],
        "policy": plan.get("policy"),
        "mode": plan.get("mode"),
        "candidate": candidate["profile"] if candidate else None,
        "best_selection_auc": decision.get("best_selection_auc"),
        "test_nights": (test_nights or {}).get("nights"),
    }
    versus = (candidate or {}).get("versus_champion") or {}
    for split in ("selection", "test"):
        paired = versus.get(split)
        figures = (
            (candidate or {}).get("selection") if split == "selection" else (candidate or {}).get("metrics")
        ) or {}
        bounds = interval(figures, "roc_auc")
        row[f"challenger_{split}_auc"] = figure(figures, "roc_auc")
        row[f"challenger_{split}_low"], row[f"challenger_{split}_high"] = bounds or (None, None)
        if paired:
            row[f"champion_{split}_auc"] = paired["champion_auc"]
            row[f"champion_{split}_low"], row[f"champion_{split}_high"] = paired["champion_interval"]
            if split == "selection":
                row["paired_selection_low"], row["paired_selection_high"] = paired["low"], paired["high"]
    if candidate:
        row["selection_split"] = candidate.get("selection_split_fingerprint")
        row["test_split"] = candidate.get("test_split_fingerprint")
    return row
