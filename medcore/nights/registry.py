"""The champion per condition: the model the project stands behind until a better one is proven.

`<registry>/<condition>.json` holds the champion (run id, profile, a copy of its model, its split
manifest and the hashes of every image it or its warm-start ancestors trained on, its figures,
when it was promoted and why), the best selection ROC AUC any champion reached on the current
selection images, how many nights the current test split has been reported on, and a short
history of decisions. `<condition>.trend.csv` beside it keeps one row per night for the trend.

`medcore.nights.decision` decides (pure, never reading the test split); this module reads tonight's
models, and applies the decision to the files. Every change to a registry file is atomic and made under
a per-condition lock, the champion record before the trend row, so a killed promotion is repaired on the
next start.
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
from medcore.nights.decision import (
    KEPT,
    NO_CHAMPION,
    PROMOTED,
    Promotion,
    Tonight,
    champion_id,
    champion_summary,
    check_gates,
    decide,
    figure,
    interval,
    next_best,
    pick_candidate,
    promotion,
)
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
            _undo_latest(record)
        outcome = promotion(record, _tonight(models, run_id), condition, run_id, settings, now, redecided=bool(mine))
        undone = {m.profile for m in models} if mine else set()
        return _apply(registry, record, outcome, settings.history, undone)


def _undo_latest(record: dict[str, Any]) -> None:
    """Take this run's own decision, the latest, back out of `record` (in memory): champion, best figure, test split."""
    undone = record["history"].pop(0)
    if undone["decision"] == PROMOTED:
        record["champion"], record["previous_champion"] = record.get("previous_champion"), None
    before = undone["decision_record"]
    record["best"], record["test_split"] = before.get("best_before"), before.get("test_split_before")


def _tonight(models: Sequence[ModelLayout], run_id: str) -> Tonight:
    """What the run's chains of one condition hold: candidates, failed profiles, a skip's reason, the night plan."""
    return Tonight(
        candidates=[c for c in (candidate_from(m, run_id) for m in models) if c is not None],
        failed=[m.profile for m in models if not succeeded(m)],
        skipped=_skipped_since(models),
        plan=next((read_json(m.nightly_json) for m in models if m.nightly_json.exists()), {}),
    )


def _apply(
    registry: RegistryLayout, record: dict[str, Any], outcome: Promotion, history: int, undone: set[str]
) -> dict[str, Any]:
    """Write `outcome` into the registry and return its decision record (as promotion.json keeps it).

    A promoted candidate's files are copied in first; then the record (atomic: readers see the old champion or
    the new one); the trend row last: a crash between them leaves a decision whose row `_repair` writes from the
    record on the next start. `undone` names the profiles of an undone decision of this run, whose copies go.
    """
    shown = outcome.record
    condition, run_id, now = shown["condition"], shown["run_id"], shown["decided"]
    champion = record.get("champion")
    if outcome.decision.decision == PROMOTED:
        record["champion"] = _champion_copy(registry, condition, run_id, outcome, now)
        record["previous_champion"] = champion
    record["best"], record["test_split"] = outcome.best, outcome.test_split
    shown = {**shown, "champion": champion_summary(record.get("champion"))}
    candidate = outcome.candidate
    entry = {
        "time": now,
        "run_id": run_id,
        "decision": shown["decision"],
        "reason": shown["reason"],
        "profile": candidate["profile"] if candidate else None,
        "roc_auc": figure(candidate["metrics"], "roc_auc") if candidate else None,
        "decision_record": shown,
        "trend_row": outcome.trend_row,
    }
    record["history"] = [entry, *record["history"]][:history]
    record["updated"] = now
    write_json(registry.record(condition), record)
    _write_trend(registry, condition, entry["trend_row"])
    if outcome.decision.decision == PROMOTED:
        _prune(registry, condition, _champion_files(record["champion"], champion))
    else:  # an undone promotion of this run leaves no copy behind
        for profile in undone:
            for path in (
                registry.model(condition, run_id, profile),
                registry.contract(condition, run_id, profile),
                registry.card(condition, run_id, profile),
                registry.split(condition, run_id, profile),
                registry.trained_on(condition, run_id, profile),
            ):
                path.unlink(missing_ok=True)
    return shown


def _champion_copy(
    registry: RegistryLayout, condition: str, run_id: str, outcome: Promotion, now: str
) -> dict[str, Any]:
    """Copy the promoted candidate's model, contract, split, lineage and card into the registry; its new record."""
    candidate = outcome.candidate or {}
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
        "reason": outcome.decision.reason,
    }
    new.pop("versus_champion", None)  # tonight's comparison belongs to the decision, not the champion
    return new


def registry_for(root: str | os.PathLike[str]) -> RegistryLayout:
    """The registry at `root`, which must be a folder (or not exist yet)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise StageError(f"{root}: the champion registry must be a folder")
    return RegistryLayout(root)


def registry_of(config: Config) -> RegistryLayout:
    """The registry `config` names (a hand-built Config without one uses `registry` beside its file)."""
    return registry_for(config.registry.root or config.path.parent / "registry")
