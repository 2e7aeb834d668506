"""Four nights that build on each other, on the real sets: training data arrives in steps, once per policy.

Usage: .venv/bin/python bench/nights.py [--config conditions.yaml] [--condition pneumonia ...]
       [--profile standard ...] [--epochs N] [--steps 0.55 0.70 0.85 1.0] [--policies retrain continue]
       [--fraction 1.0] [--seed N] [--name nights]

The real sets are first split as the pipeline splits them (shipped splits kept, the rest by the keyed
hash). Each night then sees every val and test image (the locked test split) and a growing share of
each set's train groups (55, 70, 85, 100 %; a keyed hash orders them, so each night's images contain
the last night's). The four nights run once per policy (`retrain`, `continue`), each policy with a
registry of its own and through `medcore run` (the stages the DAG runs). Per night it records the wall
time, the CPU minutes the night's process used (user + system, from the kernel's accounting of the
child), the plan and the decision per condition with their reasons, the champion's and the
challenger's ROC AUC on the locked test split (the champion re-scored on the same images), the paired
selection-split difference of every promotion, and how many images changed split since the night
before and since the full set's split (both must be 0).

`--fraction F` keeps only a keyed-hash share F of each set's groups (train, val and test alike) for a
smaller run; `--epochs` overrides every profile's epochs (a warm start trains `nightly.continue_epochs`
of them). `--seed N` replaces the config's seed, which keys the drawn splits, the order the train groups
arrive in and every random draw of training: training is deterministic for a given seed and machine, so
one pair of chains measures one seed's luck as much as the policy, and repeating it with other seeds
tells the two apart. Writes bench/results/<name>.json; `bench/report.py` turns it into docs/benchmarks/nights.md.
Skips (exit 0) when the real sets are not there ($MEDCORE_DATA_ROOT, default ../shared/datasets).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from bench.common import NO_DATA, ROOT, bench_workdir, real_sets_config, write_result
from medcore.config import load_config
from medcore.jsonio import read_json
from medcore.layout import RunLayout

STEPS = (0.55, 0.70, 0.85, 1.0)
PAIRED_RESAMPLES, PAIRED_SEED = 2000, 0  # the final champions' paired test comparison


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def reference_splits(config, conditions: list[str]) -> dict[str, pd.DataFrame]:
    """Each condition's split of the full real set, as tonight's validate stage would make it."""
    from medcore.data.validation import validate_condition

    splits = {}
    for name in conditions:
        result = validate_condition(config, config.conditions[name])
        if not result.ok:
            raise SystemExit(f"{name}: the real set does not validate: {result.reason}")
        splits[name] = result.manifest
    return splits


def night_rows(split: pd.DataFrame, step: float, fraction: float, seed: int) -> pd.DataFrame:
    """The images present on a night: all val and test, and the first `step` of the train groups (nested)."""
    from medcore.data.datasets import split_draw

    groups = split["group"].astype(str)
    kept = split[split_draw("keep:" + groups, seed) < fraction] if fraction < 1.0 else split
    arrives = split_draw("arrive:" + kept["group"].astype(str), seed)
    return kept[(kept["split"] != "train") | (arrives < step)]


def seeded_config(config: Path, seed: int, folder: Path) -> Path:
    """A config in `folder` that is `config` with another seed; every night's config extends it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "seeded.yaml"
    path.write_text(f"extends: {config.resolve()}\nseed: {seed}\n")
    return path


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    try:
        os.link(source, target)  # the sets are read-only and never written: a hard link is a free copy
    except OSError:
        shutil.copyfile(source, target)


def stage(config, condition: str, rows: pd.DataFrame, data: Path) -> None:
    """Make `data/<dataset>` hold exactly `rows` of the real set, in the set's own layout."""
    spec = config.conditions[condition]
    source, target = config.dataset_dir(spec), data / spec.dataset
    for relpath in rows["relpath"]:
        _place(source / relpath, target / relpath)
    if spec.layout == "csv":
        table = pd.read_csv(source / spec.manifest, dtype=str, keep_default_na=False)
        present = {os.path.normpath(r) for r in rows["relpath"]}
        wanted = table[table[spec.image_column].map(lambda v: os.path.normpath(str(v).strip())).isin(present)]
        (target / spec.manifest).parent.mkdir(parents=True, exist_ok=True)
        wanted.to_csv(target / spec.manifest, index=False)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_night(
    config_path: Path, env: dict[str, str], run_id: str, conditions: list[str], profiles: list[str], epochs: int | None
) -> dict[str, Any]:
    """One night through `medcore run`: wall time and the CPU seconds its process used."""
    command = [sys.executable, "-m", "medcore.cli", "run", "--config", str(config_path), "--run-id", run_id]
    for c in conditions:
        command += ["--condition", c]
    for p in profiles:
        command += ["--profile", p]
    if epochs:
        command += ["--epochs", str(epochs)]
    before, start = _cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - before
    if done.returncode not in (0, 1):  # 1: a model failed, which the night's record shows
        raise SystemExit(f"{run_id}: medcore run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return {"wall_seconds": round(wall, 1), "cpu_minutes": round(cpu / 60, 2), "exit": done.returncode}


def _moved(before: pd.Series | None, after: pd.Series) -> int:
    if before is None:
        return 0
    common = before.index.intersection(after.index)
    return int((before[common] != after[common]).sum())


def condition_record(
    run: RunLayout, condition: str, profiles: list[str], previous: pd.Series | None, reference: pd.Series
) -> tuple[dict[str, Any], pd.Series | None]:
    """What one night did for one condition, read back from the files the stages and promote wrote."""
    promotion = (read_json(run.promotion_json)["conditions"] if run.promotion_json.exists() else {}).get(condition, {})
    per_profile, split = {}, None
    for profile in profiles:
        paths = run.model(condition, profile)
        if paths.split_csv.exists() and split is None:
            frame = pd.read_csv(paths.split_csv, dtype={"sha256": str, "split": str})
            split = frame.drop_duplicates("sha256").set_index("sha256")["split"]
        metrics = read_json(paths.metrics_json) if paths.metrics_json.exists() else {}
        training = read_json(paths.training_json) if paths.training_json.exists() else {}
        versus = metrics.get("versus_champion") or {}
        per_profile[profile] = {
            "test_auc": metrics.get("roc_auc"),
            "test_interval": (metrics.get("intervals") or {}).get("roc_auc"),
            "selection_auc": (metrics.get("selection") or {}).get("roc_auc"),
            "champion_test_auc": (versus.get("test") or {}).get("champion_auc"),
            "champion_selection_auc": (versus.get("selection") or {}).get("champion_auc"),
            "epochs_run": training.get("epochs_run"),
            "train_images": training.get("train_images"),
            "train_minutes": round(training["wall_seconds"] / 60, 2) if training.get("wall_seconds") else None,
            "weights_used": training.get("weights_used"),
        }
    plan = next(
        (
            read_json(run.model(condition, p).nightly_json)
            for p in profiles
            if run.model(condition, p).nightly_json.exists()
        ),
        {},
    )
    candidate = (promotion.get("candidate") or {}).get("profile")
    chosen = per_profile.get(candidate) or {}
    paired = (promotion.get("versus_champion") or {}).get("selection") or {}
    champion_after = (
        chosen.get("test_auc") if promotion.get("decision") == "promoted" else chosen.get("champion_test_auc")
    )
    record = {
        "mode": plan.get("mode"),
        "plan_reason": plan.get("reason"),
        "changes": {k: (plan.get("changes") or {}).get(k) for k in ("added", "removed", "relabelled", "moved")},
        "decision": promotion.get("decision"),
        "decision_reason": promotion.get("reason"),
        "candidate": candidate,
        "challenger_test_auc": chosen.get("test_auc"),
        "champion_before_test_auc": chosen.get("champion_test_auc"),
        "champion_after_test_auc": champion_after,
        "paired_selection_delta": paired.get("delta"),
        "paired_selection_low": paired.get("low"),
        "test_nights": (promotion.get("test_split") or {}).get("nights"),
        "moved_since_last_night": _moved(previous, split) if split is not None else None,
        "moved_since_full_split": _moved(reference, split) if split is not None else None,
        "profiles": per_profile,
    }
    return record, split


def final_champion_test(policy: str, record: dict[str, Any], condition: str) -> pd.DataFrame | None:
    """Test predictions (relpath, label, group, probability) of the champion standing after the policy's last
    night: the challenger's own when it was promoted, else the champion as that night re-scored it."""
    last = record["nights"][-1]
    c = last["conditions"][condition]
    if not c.get("candidate"):
        return None
    paths = RunLayout(ROOT / record["run_folder"], f"{policy}-night{last['night']}").model(condition, c["candidate"])
    if not paths.predictions_csv.exists():
        return None
    ours = pd.read_csv(paths.predictions_csv, dtype={"relpath": str, "group": str})
    if c["decision"] == "promoted":
        return ours[["relpath", "label", "group", "probability"]]
    if not paths.champion_predictions_csv.exists():
        return None
    theirs = pd.read_csv(paths.champion_predictions_csv, dtype={"relpath": str})
    theirs = theirs[theirs["split"] == "test"][["relpath", "probability"]]
    return ours[["relpath", "label", "group"]].merge(theirs, on="relpath", validate="one_to_one")


def paired_finals(policies: dict[str, Any], resamples: int, seed: int) -> dict[str, Any]:
    """Per condition, continue's final champion against retrain's on the same locked test images: the AUC
    difference (continue - retrain) with its paired bootstrap interval, patients resampled."""
    from medcore.assess.evaluation import paired_auc_difference

    if not {"retrain", "continue"} <= set(policies):
        return {}
    out = {}
    for condition in policies["retrain"]["nights"][-1]["conditions"]:
        a = final_champion_test("continue", policies["continue"], condition)
        b = final_champion_test("retrain", policies["retrain"], condition)
        if a is None or b is None:
            continue
        both = a.merge(b[["relpath", "probability"]], on="relpath", suffixes=("_continue", "_retrain"))
        paired = paired_auc_difference(
            both["label"].to_numpy(),
            both["probability_continue"].to_numpy(),
            both["probability_retrain"].to_numpy(),
            both["group"].astype(str).to_numpy(),
            resamples,
            seed=seed,
        )
        out[condition] = {
            "continue_auc": paired["challenger_auc"],
            "retrain_auc": paired["champion_auc"],
            **{k: paired[k] for k in ("delta", "low", "high", "n", "n_positive", "units", "unit")},
        }
    return out


def last_night_only(part: dict[str, Any], full: dict[str, Any]) -> bool:
    """Whether `part` ran retrain for only the last of `full`'s nights (`--policies retrain --steps 1.0`).

    A retrain night trains from scratch on that night's images with the config's seed whatever the registry
    holds, and training is deterministic for a seed and machine, so that night's model is the one the full
    chain's last night trains; the earlier nights are spent only on its CPU minutes, which such a merge
    therefore cannot compare, and on the champion it is judged against: the merged night was judged against
    an empty registry (its decision is recorded), not against the full chain's third champion.
    """
    return set(part["policies"]) == {"retrain"} and part.get("steps") == (full.get("steps") or [])[-1:]


def only_conditions(record: dict[str, Any], conditions: list[str]) -> dict[str, Any]:
    """A policy's record with each night's conditions narrowed to `conditions`."""
    nights = [
        {**night, "conditions": {c: r for c, r in night.get("conditions", {}).items() if c in conditions}}
        for night in record["nights"]
    ]
    return {**record, "nights": nights}


def merge(paths: list[Path], name: str) -> int:
    """One result from several runs of one policy each; they must have measured the same thing."""
    parts = [read_json(p) for p in paths]
    same = (
        "profiles",
        "epochs",
        "steps",
        "fraction",
        "image_size",
        "eager",
        "no_gates",
        "margin",
        "seed",
    )
    full = max(parts, key=lambda part: len(part.get("steps") or []))
    shortcut = False
    for part in parts:
        differs = [k for k in same if part.get(k) != full.get(k)]
        if differs == ["steps"] and last_night_only(part, full):
            differs, shortcut = [], True
        if differs:
            raise SystemExit(f"cannot merge: the runs differ in {', '.join(differs)}")
    # Conditions may differ only where no CPU ratio is claimed anyway (retrain's last night alone): the paired
    # comparison is per condition, so it keeps the conditions every run measured.
    common = [c for c in full["conditions"] if all(c in part["conditions"] for part in parts)]
    if not common or (not shortcut and any(part["conditions"] != full["conditions"] for part in parts)):
        raise SystemExit("cannot merge: the runs differ in conditions")
    merged = {k: v for k, v in full.items() if k not in ("benchmark", "machine", "versions", "policies", "command")}
    merged["retrain_last_night_only"] = shortcut
    merged["conditions"] = common
    merged["policies"] = {
        policy: only_conditions(record, common) for part in parts for policy, record in part["policies"].items()
    }
    merged["command"] = " and ".join(part["command"] for part in parts) + " (side by side)"
    merged["complete"] = all(part.get("complete") for part in parts)
    if merged["complete"]:
        merged["final_paired"] = paired_finals(merged["policies"], PAIRED_RESAMPLES, PAIRED_SEED)
    path = write_result(name, merged)
    print(f"merged {len(parts)} results into {path.relative_to(ROOT)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "conditions.yaml"))
    parser.add_argument("--condition", action="append", default=[])
    parser.add_argument("--profile", action="append", default=[])
    parser.add_argument("--epochs", type=int, default=None, help="override every profile's epochs")
    parser.add_argument("--steps", type=float, nargs="+", default=list(STEPS), help="share of train groups per night")
    parser.add_argument("--policies", nargs="+", default=["retrain", "continue"], choices=["retrain", "continue"])
    parser.add_argument("--fraction", type=float, default=1.0, help="keep this share of each set's groups")
    parser.add_argument(
        "--image-size", type=int, default=None, help="override every profile's image size (smaller runs)"
    )
    parser.add_argument("--eager", action="store_true", help="profiles run eagerly: no graph trace (tiny runs only)")
    parser.add_argument(
        "--no-gates",
        action="store_true",
        help="drop the registry's absolute gates (a reduced run's tiny val split cannot meet them)",
    )
    parser.add_argument("--seed", type=int, default=None, help="replace the config's seed (see above)")
    parser.add_argument("--name", default="nights")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="combine the results of runs made one policy each (e.g. side by side) into --name",
    )
    return parser


@dataclass
class _Run:
    """What every night of every policy shares: the arguments, the base config and the full splits."""

    args: argparse.Namespace
    argv: list[str] | None
    data_root: Any
    base: Any
    config_file: Path
    conditions: list[str]
    profiles: list[str]
    splits: dict
    references: dict
    policies: dict[str, Any] = field(default_factory=dict)


def _save(run: _Run) -> Path:
    """Write the results so far (after every night, so an interrupted run keeps what it measured)."""
    args, base, policies = run.args, run.base, run.policies
    all_nights = all(len(p["nights"]) == len(args.steps) for p in policies.values())
    return write_result(
        args.name,
        {
            "config": os.path.relpath(Path(args.config).resolve(), ROOT),
            "data_root": str(run.data_root),
            "conditions": run.conditions,
            "profiles": run.profiles,
            "epochs": args.epochs,
            "steps": args.steps,
            "fraction": args.fraction,
            "image_size": args.image_size,
            "eager": args.eager,
            "no_gates": args.no_gates,
            "margin": base.registry.margin,
            "seed": base.seed,
            "continue_epochs": base.nightly.continue_epochs,
            "continue_learning_rate": base.nightly.continue_learning_rate,
            "command": "bench/nights.py " + " ".join(run.argv if run.argv is not None else sys.argv[1:]),
            "full_split_images": {c: len(s) for c, s in run.splits.items()},
            "policies": policies,
            "complete": all_nights and len(policies) == len(args.policies),
            "final_paired": paired_finals(policies, PAIRED_RESAMPLES, PAIRED_SEED) if all_nights else {},
        },
    )


def _policy_config(run: _Run, policy: str, folder: Path) -> Path:
    """Write the config one policy's nights run with, extending the base one; return its path."""
    args = run.args
    config_path = folder / "nights.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = {
        **({"image_size": args.image_size} if args.image_size else {}),
        **({"execution": "eager"} if args.eager else {}),
    }
    shrink = "".join(f"  {p}: {json.dumps(overrides)}\n" for p in run.profiles) if overrides else ""
    config_path.write_text(
        f"extends: {run.config_file}\ndata_root: {folder / 'data'}\n"
        f"runs_root: {folder / 'runs'}\nnightly: {{policy: {policy}}}\n"
        + (f"profiles:\n{shrink}" if shrink else "")
        + (
            "registry: {gates: {roc_auc_low: null, recall: null, specificity: null, roc_auc: null}, min_tier: null}\n"
            if args.no_gates
            else ""
        )
    )
    return config_path


def _night(run: _Run, policy: str, folder: Path, config_path: Path, env: dict, i: int, step: float, previous: dict):
    """Stage night `i`'s rows, run it and record each condition; updates `previous` in place."""
    args, base = run.args, run.base
    present = {}
    for c in run.conditions:
        rows = night_rows(run.splits[c], step, args.fraction, base.seed)
        stage(base, c, rows, folder / "data")
        present[c] = {s: int((rows["split"] == s).sum()) for s in ("train", "val", "test")}
    run_id = f"{policy}-night{i}"
    print(f"  {policy} night {i} ({step:.0%} of train): running", flush=True)
    night = {
        "night": i,
        "step": step,
        "images": present,
        **run_night(config_path, env, run_id, run.conditions, run.profiles, args.epochs),
    }
    layout = RunLayout(folder / "runs", run_id)
    night["conditions"] = {}
    for c in run.conditions:
        night["conditions"][c], split = condition_record(layout, c, run.profiles, previous[c], run.references[c])
        previous[c] = split if split is not None else previous[c]
    return night


def _print_night(night: dict) -> None:
    shown = "; ".join(
        f"{c} {r['mode']}/{r['decision']} test AUC champion {_rounded(r['champion_after_test_auc'])}"
        for c, r in night["conditions"].items()
    )
    print(f"    {night['wall_seconds'] / 60:.1f} min wall, {night['cpu_minutes']:.1f} CPU min: {shown}", flush=True)


def _run_policy(run: _Run, policy: str, workdir: Path) -> None:
    folder = workdir / policy
    config_path = _policy_config(run, policy, folder)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDCORE_")},
        "MEDCORE_REGISTRY_ROOT": str(folder / "registry"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    nights, previous = [], dict.fromkeys(run.conditions)
    for i, step in enumerate(run.args.steps, start=1):
        night = _night(run, policy, folder, config_path, env, i, step, previous)
        nights.append(night)
        run.policies[policy] = {
            "nights": nights,
            "cpu_minutes": round(sum(n["cpu_minutes"] for n in nights), 2),
            "wall_minutes": round(sum(n["wall_seconds"] for n in nights) / 60, 2),
            "run_folder": str((folder / "runs").relative_to(ROOT)),
        }
        _save(run)
        _print_night(night)
    shutil.rmtree(folder / "data", ignore_errors=True)  # links to the real sets; the runs stay


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.merge:
        return merge(args.merge, args.name)
    found = real_sets_config(args.config)
    if found is None:
        print(NO_DATA)
        return 0
    data_root, base = found
    workdir, _ = bench_workdir(args.name)
    config_file = Path(args.config).resolve()
    if args.seed is not None:
        config_file = seeded_config(config_file, args.seed, workdir)
        base = load_config(config_file)
    conditions = args.condition or list(base.conditions)
    profiles = args.profile or list(base.profiles)
    print(f"{args.name}: splitting the full sets of {', '.join(conditions)}", flush=True)
    splits = reference_splits(base, conditions)
    references = {c: s.drop_duplicates("sha256").set_index("sha256")["split"] for c, s in splits.items()}
    run = _Run(args, argv, data_root, base, config_file, conditions, profiles, splits, references)
    for policy in args.policies:
        _run_policy(run, policy, workdir)
    path = _save(run)
    print(f"raw figures in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
