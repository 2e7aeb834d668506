"""The champion per condition: the model the project stands behind until a better one is proven.

`<registry>/<condition>.json` holds the champion (run id, profile, a copy of its model, its split
manifest and the hashes of every image it or its warm-start ancestors trained on, its figures,
when it was promoted and why), the best selection ROC AUC any champion reached on the current
selection images, how many nights the current test split has been reported on, and a short
history of decisions. `<condition>.trend.csv` beside it keeps one row per night for the trend.

Decisions never read the test split. The candidate is the run's best successful model of a
condition by its selection (val) figures, and it replaces the champion only if

1. it reaches every absolute gate of `registry.gates` on the selection split, and
2. the champion, re-scored tonight on the very same selection images, is not meaningfully better:
   the lower bound of the paired bootstrap interval of (challenger - best) ROC AUC is above
   `-registry.margin`, where "best" is the best figure any champion reached on these images. A
   champion that slipped below the best has used up that much of the margin, so no sequence of
   small losses can add up to more than one margin.

A run whose models all failed or were skipped, or whose candidate fails a gate or is worse, never
touches the champion. Every change to a registry file is atomic and made under a per-condition lock.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medcore.artefacts import KEPT_FIGURES  # figures copied into the registry with the champion
from medcore.config import TIER_ORDER, Config, RegistrySettings, canonical_label
from medcore.errors import StageError
from medcore.jsonio import atomic_write_bytes, read_json, write_json
from medcore.layout import ModelLayout, RegistryLayout
from medcore.nights.trend import TREND_COLUMNS, trend_csv

__all__ = [
    "PROMOTED",
    "KEPT",
    "NO_CHAMPION",
    "TIER_ORDER",
    "test_split_fingerprint",
    "split_fingerprint",
    "figure",
    "interval",
    "check_gates",
    "succeeded",
    "candidate_from",
    "pick_candidate",
    "decide",
    "read_record",
    "promote_condition",
    "champion_summary",
    "champion_id",
    "next_best",
    "registry_for",
    "registry_of",
]

PROMOTED, KEPT, NO_CHAMPION = "promoted", "kept champion", "no champion"


def test_split_fingerprint(split_csv: Path) -> str | None:
    """Hash of the test rows of a split manifest (sorted relpath and label); None if there are none.

    Two models are compared on "the same test split" only when these match: the same images with
    the same labels, whatever order or extra columns the manifests have.
    """
    return split_fingerprint(split_csv, "test")


def split_fingerprint(split_csv: Path, split: str) -> str | None:
    """Hash of one split's rows of a split manifest (sorted relpath and label); None if there are none."""
    split_csv = Path(split_csv)
    if not split_csv.is_file():
        return None
    with split_csv.open(newline="", encoding="utf-8") as handle:
        rows = sorted(
            (row["relpath"], canonical_label(row["label"]))
            for row in csv.DictReader(handle)
            if row.get("split") == split
        )
    if not rows:
        return None
    digest = hashlib.sha256()
    for relpath, label in rows:
        digest.update(f"{relpath}\0{label}\n".encode())
    return digest.hexdigest()[:16]


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


def succeeded(paths: ModelLayout) -> bool:
    """The report's notion of success: no failure recorded and every stage, Grad-CAM included, done."""
    return not paths.failure_json.exists() and paths.gradcam_json.exists() and paths.metrics_json.exists()


def candidate_from(paths: ModelLayout, run_id: str) -> dict[str, Any] | None:
    """What the registry needs to know about one successful model of a run; None if it did not succeed."""
    if not succeeded(paths) or not paths.model.exists():
        return None
    metrics = read_json(paths.metrics_json)
    kept = {name: metrics[name] for name in KEPT_FIGURES if name in metrics}
    kept["intervals"] = {}
    for name in metrics.get("intervals") or {}:
        bounds = interval(metrics, name)
        if bounds:
            kept["intervals"][name] = {"low": bounds[0], "high": bounds[1]}
    kept["quality_tier"] = (metrics.get("quality") or {}).get("tier")
    validation = read_json(paths.validation_json) if paths.validation_json.exists() else {}
    nightly = read_json(paths.nightly_json) if paths.nightly_json.exists() else {}
    training = read_json(paths.training_json) if paths.training_json.exists() else {}
    source = training.get("warm_start_source") or {}
    return {
        "run_id": run_id,
        "condition": paths.condition,
        "profile": paths.profile,
        "model_path": str(paths.model),
        "contract_path": str(paths.model_contract) if paths.model_contract.exists() else None,
        "split_path": str(paths.split_csv),
        "metrics": kept,
        "selection": metrics.get("selection"),
        "versus_champion": metrics.get("versus_champion"),
        "test_split_fingerprint": test_split_fingerprint(paths.split_csv),
        "selection_split_fingerprint": split_fingerprint(paths.split_csv, "val"),
        "dataset_fingerprint": validation.get("fingerprint"),
        "config_digest": nightly.get("config_digest"),
        "code_version": nightly.get("code_version"),
        "mode": nightly.get("mode"),
        "warm_start_trained_on": source.get("trained_on_path"),
        # Warm starts in a row since the last training from scratch: nightly.max_warm_starts bounds the chain.
        "warm_starts": int(source.get("warm_starts") or 0) + 1 if training.get("nightly_mode") == "continue" else 0,
    }


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
) -> dict[str, Any]:
    """The promotion decision for one condition, as data: decision, a one-sentence reason, and the evidence.

    `candidate["selection"]` holds its selection (val) figures, `candidate["versus_champion"]` the
    paired comparison with the champion re-scored on the same images; `best` is the best
    selection ROC AUC any champion reached on these images before tonight. Pure: reads and writes
    nothing, so every branch is a table-driven test.
    """
    result: dict[str, Any] = {
        "gates": [],
        "paired": None,
        "margin": settings.margin,
        "best_selection_auc": best,
        "delta_roc_auc": None,
        "gap_to_best_low": None,
    }
    if candidate is None:
        if champion:
            return {**result, "decision": KEPT, "reason": f"{no_candidate_reason}; the champion stays"}
        return {**result, "decision": NO_CHAMPION, "reason": f"no champion yet, and {no_candidate_reason}"}

    name = f"{candidate['condition']}/{candidate['profile']}"
    gates = check_gates(candidate.get("selection") or {}, settings.gates, settings.min_tier)
    result["gates"] = gates
    failed = [g for g in gates if not g["passed"]]
    if failed:
        verdict = f"candidate {name} fails the gates on the selection split: {_gate_text(failed)}"
        return {
            **result,
            "decision": KEPT if champion else NO_CHAMPION,
            "reason": f"{verdict}; the champion stays" if champion else f"no champion yet: {verdict}",
        }
    passed = f"meets every gate on the selection split ({_gate_text(gates)})" if gates else "no gates are configured"
    if not champion:
        return {**result, "decision": PROMOTED, "reason": f"first champion: {name} {passed}"}

    versus = candidate.get("versus_champion") or {}
    paired = versus.get("selection")
    if versus.get("champion") != champion_id(champion) or not paired:
        if versus.get("champion") == champion_id(champion) and versus.get("champion_missing"):
            return {
                **result,
                "decision": PROMOTED,
                "reason": f"{name} {passed}; the champion could not be re-scored ({versus['champion_missing']}), "
                "so the gates alone decided",
            }
        against = versus.get("champion") or "no champion"
        return {
            **result,
            "decision": KEPT,
            "reason": f"{name} was not compared with champion {champion_id(champion)} on the same images "
            f"(its evaluation compared it with {against}); the champion stays",
        }
    tonight = paired["champion_auc"]
    best = max(tonight, best) if best is not None else tonight
    used = best - tonight  # how far the champion already trails the best figure on these images
    gap_low = paired["low"] - used
    result.update(
        {"paired": paired, "best_selection_auc": best, "delta_roc_auc": paired["delta"], "gap_to_best_low": gap_low}
    )
    evidence = (
        f"selection ROC AUC {paired['challenger_auc']:.3f} vs champion {tonight:.3f} on the same "
        f"{paired['n']} val images ({paired['delta']:+.3f}, {paired['confidence']:.0%} paired interval "
        f"{paired['low']:+.3f} to {paired['high']:+.3f})"
    )
    if used > 1e-12:
        evidence += f"; the champion already trails the best figure on these images ({best:.3f}) by {used:.3f}"
    rule = f"lower bound versus the best {gap_low:+.3f}, margin {settings.margin:.3f}"
    if gap_low > -settings.margin:
        return {**result, "decision": PROMOTED, "reason": f"{name}: {evidence}; {rule}; {passed}"}
    # Kept also when the point estimate is better: on a small val split the interval is too wide to show
    # that the challenger is not more than the margin worse, and only what is shown may replace a champion.
    return {
        **result,
        "decision": KEPT,
        "reason": f"{name} is not shown to be within the margin of the best figure: {evidence}; {rule}",
    }


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


def read_record(registry: RegistryLayout, condition: str) -> dict[str, Any]:
    """The registry file of `condition`, or an empty record if there is none yet."""
    path = registry.record(condition)
    if not path.exists():
        return {"condition": condition, "champion": None, "history": []}
    record = read_json(path)
    record.setdefault("history", [])
    return record


@contextlib.contextmanager
def _locked(path: Path, timeout: float = 300.0) -> Iterator[None]:
    """Hold an exclusive lock on `path`: two runs deciding at once would each read the old champion.

    Gives up after `timeout` seconds (`registry.lock_timeout`) with an error naming the lock and
    its holder (host, PID, since when, as the holder wrote it into the lock file), instead of waiting
    forever on a holder that hangs. flock works across machines on NFSv4 (the kernel maps it to NFS locks).
    """
    import socket
    import time

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = " ".join(handle.read(200).split()) or "unknown"
                    raise StageError(
                        f"{path}: registry lock still held after {timeout:.0f} s (holder: {holder}); "
                        "if that process is gone, retry; nothing was changed"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            handle.seek(0)
            handle.truncate()
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            handle.write(f"host {socket.gethostname()} pid {os.getpid()} since {since}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _copy_in(source: Path, target: Path) -> str:
    """Copy a file into the registry atomically (temporary file, then rename); return its SHA-256."""
    data = Path(source).read_bytes()
    atomic_write_bytes(target, data)
    return hashlib.sha256(data).hexdigest()


def _prune(registry: RegistryLayout, condition: str, keep: set[Path]) -> None:
    """Delete model copies of former champions, keeping the current one and the one it replaced (rollback)."""
    folder = registry.models_dir(condition)
    for path in folder.glob("*") if folder.is_dir() else ():
        if path.is_file() and not path.name.startswith(".") and path.resolve() not in keep:
            path.unlink(missing_ok=True)


def _skipped_since(models: Sequence[ModelLayout]) -> str | None:
    """The reason the night skipped this condition (data, config and code unchanged), if it did."""
    for m in models:
        if m.nightly_json.exists():
            plan = read_json(m.nightly_json)
            if plan.get("mode") == "skip":
                return plan.get("reason")
    return None


def _lineage(candidate: dict[str, Any]) -> str | None:
    """SHA-256 of the candidate's train images plus those of every model it was warm-started from (None: unknown)."""
    import pandas as pd

    split = pd.read_csv(candidate["split_path"], dtype={"sha256": str, "split": str})
    if "sha256" not in split.columns:
        return None  # a manifest from before content hashes: the warm-start check will refuse this champion
    hashes = set(split.loc[split["split"] == "train", "sha256"].dropna())
    ancestor = candidate.get("warm_start_trained_on")
    if ancestor and Path(ancestor).is_file():
        hashes |= {line.strip() for line in Path(ancestor).read_text().splitlines() if line.strip()}
    return "".join(f"{h}\n" for h in sorted(hashes))


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


def _write_trend(registry: RegistryLayout, condition: str, row: dict[str, Any]) -> None:
    import pandas as pd

    path = registry.trend(condition)
    rows = pd.read_csv(path, dtype={"run_id": str}).to_dict("records") if path.is_file() else []
    rows = [r for r in rows if r.get("run_id") != row["run_id"]] + [row]  # a re-decided run replaces its row
    atomic_write_bytes(path, trend_csv([{k: r.get(k) for k in TREND_COLUMNS} for r in rows]).encode())


def _champion_files(*champions: dict[str, Any] | None) -> set[Path]:
    keys = ("model_path", "contract_path", "card_path", "split_path", "trained_on_path")
    return {Path(c[k]).resolve() for c in champions if c for k in keys if c.get(k)}


def _repair(registry: RegistryLayout, condition: str, record: dict[str, Any]) -> None:
    """Finish or undo what a promotion killed half way left (called under the condition's lock).

    Temporary files of interrupted writes are deleted; copies no recorded champion names (a promotion
    killed before its record was written) are pruned; a recorded decision whose trend row is missing or
    stale (killed between the record and the trend) gets the row the record kept for it.
    """
    root = Path(registry.root)
    for pattern in (f".{registry.record(condition).name}.*.tmp", f".{registry.trend(condition).name}.*.tmp"):
        for stale in root.glob(pattern):
            stale.unlink(missing_ok=True)
    folder = registry.models_dir(condition)
    for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
        stale.unlink(missing_ok=True)
    _prune(registry, condition, _champion_files(record.get("champion"), record.get("previous_champion")))
    latest = next(iter(record["history"]), None)
    if not latest or not latest.get("trend_row"):
        return
    import pandas as pd

    path = registry.trend(condition)
    rows = pd.read_csv(path, dtype={"run_id": str}) if path.is_file() else pd.DataFrame(columns=["run_id"])
    mine = rows[rows["run_id"] == latest["run_id"]]
    if mine.empty or mine["decision"].iloc[-1] != latest["decision"]:
        _write_trend(registry, condition, latest["trend_row"])


def promote_condition(
    registry: RegistryLayout,
    condition: str,
    models: Sequence[ModelLayout],
    run_id: str,
    settings: RegistrySettings,
    now: str,
) -> dict[str, Any]:
    """Make this run's one decision for `condition` and apply it to the registry.

    If this run decided before and no later run has since (its promote task was cleared and runs
    again, e.g. after a retrain), that decision is undone and made afresh on the run's files as they
    are now, so the registry never holds a model the run no longer has. If a later run has decided
    since, the earlier decision stands and is returned as it was.
    """
    with _locked(registry.lock(condition), settings.lock_timeout):
        record = read_record(registry, condition)
        _repair(registry, condition, record)
        mine = [i for i, h in enumerate(record["history"]) if h.get("run_id") == run_id]
        if mine and mine[0] != 0:
            return {**record["history"][mine[0]]["decision_record"], "repeated": True}
        if mine:
            undone = record["history"].pop(0)
            if undone["decision"] == PROMOTED:
                record["champion"], record["previous_champion"] = record.get("previous_champion"), None
            before = undone["decision_record"]
            record["best"], record["test_split"] = before.get("best_before"), before.get("test_split_before")
        champion = record.get("champion")

        candidates = [c for c in (candidate_from(m, run_id) for m in models) if c is not None]
        failed = [m.profile for m in models if not succeeded(m)]
        skipped = _skipped_since(models)
        candidate = pick_candidate(candidates, settings.gates, settings.min_tier)
        why_none = skipped or (
            f"no model of this run succeeded ({', '.join(failed)} failed)"
            if failed
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
            decision["decision"],
            figure((candidate or {}).get("selection") or {}, "roc_auc"),
        )
        reported = next((c.get("test_split_fingerprint") for c in candidates), None)
        test_nights = _test_nights(record.get("test_split"), reported, run_id, now)
        decision.update(
            {
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
                "failed_profiles": failed,
                "skipped": bool(skipped),
                "redecided": bool(mine),
                "best_before": record.get("best"),
                "test_split_before": record.get("test_split"),
                "best": best,
                "test_split": test_nights,
            }
        )
        if decision["decision"] == PROMOTED:
            profile = candidate["profile"]
            if candidate.get("contract_path"):
                from medcore.model.contract import read_contract

                read_contract(candidate["model_path"], candidate["contract_path"])  # never pair a model with another's
            model_copy = registry.model(condition, run_id, profile)
            sha = _copy_in(Path(candidate["model_path"]), model_copy)
            contract_copy = None
            if candidate.get("contract_path"):
                contract_copy = registry.contract(condition, run_id, profile)
                _copy_in(Path(candidate["contract_path"]), contract_copy)
            split_copy = registry.split(condition, run_id, profile)
            _copy_in(Path(candidate["split_path"]), split_copy)
            lineage = _lineage(candidate)
            trained_on = (
                None
                if lineage is None
                else atomic_write_bytes(registry.trained_on(condition, run_id, profile), lineage.encode())
            )
            card = Path(candidate["model_path"]).with_name("model_card.md")
            card_copy = registry.card(condition, run_id, profile) if card.is_file() else None
            if card_copy:
                _copy_in(card, card_copy)
            new = {
                **candidate,
                "source_model_path": candidate["model_path"],
                "model_path": str(model_copy),
                "contract_path": str(contract_copy) if contract_copy else None,
                "card_path": str(card_copy) if card_copy else None,
                "model_sha256": sha,
                "split_path": str(split_copy),
                "trained_on_path": str(trained_on) if trained_on else None,
                "promoted": now,
                "reason": decision["reason"],
            }
            new.pop("versus_champion", None)  # tonight's comparison belongs to the decision, not the champion
            record["champion"] = new
            record["previous_champion"] = champion
        record["best"], record["test_split"] = best, test_nights
        decision["champion"] = champion_summary(record.get("champion"))
        entry = {
            "time": now,
            "run_id": run_id,
            "decision": decision["decision"],
            "reason": decision["reason"],
            "profile": candidate["profile"] if candidate else None,
            "roc_auc": figure(candidate["metrics"], "roc_auc") if candidate else None,
            "decision_record": decision,
        }
        record["history"] = [entry, *record["history"]][: settings.history]
        record["updated"] = now
        plan = next((read_json(m.nightly_json) for m in models if m.nightly_json.exists()), {})
        entry["trend_row"] = _trend_row(decision, candidate, now, run_id, test_nights, plan)
        # The record first (atomic: readers see the old champion or the new one), the trend row last: a crash
        # between them leaves a decision whose row `_repair` writes from the record on the next start.
        write_json(registry.record(condition), record)
        _write_trend(registry, condition, entry["trend_row"])
        if decision["decision"] == PROMOTED:
            keep = {
                Path(p).resolve()
                for c in (record["champion"], champion)
                if c
                for p in (
                    c.get("model_path"),
                    c.get("contract_path"),
                    c.get("card_path"),
                    c.get("split_path"),
                    c.get("trained_on_path"),
                )
                if p
            }
            _prune(registry, condition, keep)
        elif mine:  # an undone promotion of this run leaves no copy behind
            for profile in {m.profile for m in models}:
                for path in (
                    registry.model(condition, run_id, profile),
                    registry.contract(condition, run_id, profile),
                    registry.card(condition, run_id, profile),
                    registry.split(condition, run_id, profile),
                    registry.trained_on(condition, run_id, profile),
                ):
                    path.unlink(missing_ok=True)
        return decision


def registry_for(root: str | os.PathLike[str]) -> RegistryLayout:
    """The registry at `root`, which must be a folder (or not exist yet)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise StageError(f"{root}: the champion registry must be a folder")
    return RegistryLayout(root)


def registry_of(config: Config) -> RegistryLayout:
    """The registry `config` names (a hand-built Config without one uses `registry` beside its file)."""
    return registry_for(config.registry.root or config.path.parent / "registry")
