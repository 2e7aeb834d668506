"""The night budget: predict each chain's minutes on this machine, then fit the night into its budget.

Pure: no Airflow, no TensorFlow (the probe runs in a child process, `medcore.nights.speed_probe`). The speed comes from
this machine's own measurements: the last nights' `training.json` and stage timings for the same CPU id,
else a probe of about a minute cached per CPU id. A chain is validate + train + evaluate + Grad-CAM; the
night is the chains packed longest-first onto the training pool's slots (one per core).

When the predicted night is over budget it is cut by a ladder, per condition, only as far as it must and
never silently: every cut records what, why and, where a previous training's history knows it, what it
costs.
1. order the chains longest-first so the pool stays full (not a cut: always done);
2. fewer epochs (one at a time, from the longest chain; early stopping on val still picks the best one);
3. progressive resizing: not in the automatic ladder, because it is not measured on the real sets yet;
4. the standard profile only (the other profiles of a condition are dropped, the dearest condition first);
5. skip a condition whose champion is still good (at least the registry's minimum tier), saying so.
After rungs 4 and 5 the epoch cuts of rung 2 are given back as far as the night still fits.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# The prediction and the ladder (pure arithmetic) live in medcore.nights.ladder; re-exported for callers.
from medcore.nights.ladder import (
    CHAMPION_RESCORING,
    INFERENCE_SHARE,
    LADDER,
    PROGRESSIVE_LEFT_OUT,
    Chain,
    Cut,
    NightPlan,
    Speed,
    fit_night,
    pack,
    predict_chain,
)
from medcore.nights.speed_probe import PROBE_VERSION  # no TensorFlow at import: it loads inside probe()

__all__ = [
    "Chain",
    "Speed",
    "Cut",
    "NightPlan",
    "cpu_id",
    "predict_chain",
    "pack",
    "fit_night",
    "speed_from_records",
    "epoch_cost_from_history",
    "LADDER",
    "PROGRESSIVE_LEFT_OUT",
    "INFERENCE_SHARE",
    "CHAMPION_RESCORING",
]

log = logging.getLogger(__name__)


def cpu_id(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """This CPU's kind as `<vendor> family F model M stepping S <isa>`: what speed figures are keyed by.

    The model name alone could not tell a Zen 5 from a Zen 1 ("AMD EPYC" both,
    docs/decisions/0014-night-planner.md); the ISA tag (amx / avx512_bf16 / avx512 / avx2) also tells an
    `ONEDNN_MAX_CPU_ISA=AVX2` emulation apart.
    """
    import os

    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            if not line.strip():
                break  # the first CPU is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return "unknown"
    flags = set(fields.get("flags", "").split())
    isa = next((tag for flag, tag in ISA_TAGS if flag in flags), "sse")
    emulated = (os.environ.get("ONEDNN_MAX_CPU_ISA") or "").lower()
    if emulated and emulated != "all":
        isa = f"{isa}->onednn_{emulated}"
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(fields.get("vendor_id", ""), "cpu")
    parts = [vendor] + [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields]
    return re.sub(r"\s+", " ", " ".join(parts).replace("cpu family", "family")) + f" {isa}"


ISA_TAGS = (("amx_bf16", "amx"), ("avx512_bf16", "avx512_bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))


def speed_from_records(
    records: Iterable[Mapping[str, Any]], cpu: str, source: str, timings: Iterable[Mapping[str, Any]] = ()
) -> Speed | None:
    """This CPU's speed from earlier training records (training.json, or a bench night's per-model summary).

    A record needs `image_size`, `train_images`, `epochs_run` (or its epoch_seconds), `wall_seconds` and
    `seconds_to_first_step`; progressive or resumed trainings are left out (their epochs are not one size or
    not all timed). `timings`: per-chain stage seconds ({condition, profile, validate, evaluate, gradcam}).
    None when no record qualifies.
    """
    seconds: dict[int, float] = {}
    image_epochs: dict[int, float] = {}
    startups = []
    for r in records:
        try:
            if r.get("progressive") or r.get("resumed_from_epoch"):
                continue
            size, images = int(r["image_size"]), int(r["train_images"])
            epochs = len(r["epoch_seconds"]) if r.get("epoch_seconds") else int(r["epochs_run"])
            startup = float(r.get("seconds_to_first_step") or 0.0)
            work = float(r["wall_seconds"]) - startup
        except (KeyError, TypeError, ValueError):
            continue
        if images < 100 or epochs < 1 or work <= 0:
            continue  # a tiny set's epochs are mostly fixed cost: they would make every image look dear
        seconds[size] = seconds.get(size, 0.0) + work
        image_epochs[size] = image_epochs.get(size, 0.0) + images * epochs
        if startup:
            startups.append(startup)
    if not seconds:
        return None
    measured: dict[tuple[str, str, str], dict[str, float]] = {}
    fixed: dict[str, list[float]] = {"validate": [], "evaluate": [], "gradcam": [], "train": []}
    for t in timings:
        key = (str(t.get("condition")), str(t.get("profile")), str(t.get("mode") or "retrain"))
        for stage in ("validate", "evaluate", "gradcam"):
            if t.get(stage):
                measured.setdefault(key, {})[stage] = float(t[stage])
                if key[2] == "retrain" or stage != "evaluate":  # the fixed part is a chain without a champion
                    fixed[stage].append(float(t[stage]))
        if t.get("train") and t.get("training_seconds") and not t.get("crossval"):
            fixed["train"].append(float(t["train"]) - float(t["training_seconds"]))
    return Speed(
        cpu_id=cpu,
        source=source,
        seconds_per_image_epoch={s: seconds[s] / image_epochs[s] for s in sorted(seconds)},
        startup_seconds=_median(startups, 60.0),
        validate_seconds=_median(fixed["validate"], 10.0),
        evaluate_seconds=_median(fixed["evaluate"], 30.0),
        gradcam_seconds=_median(fixed["gradcam"], 40.0),
        gradcam_image_epochs=0.0 if fixed["gradcam"] else Speed.gradcam_image_epochs,
        train_task_seconds=max(0.0, _median(fixed["train"], 20.0)),
        measured=measured,
    )


def _median(values: Sequence[float], default: float) -> float:
    values = sorted(values)
    if not values:
        return default
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def epoch_cost_from_history(history: Mapping[str, Sequence[float]] | None, epochs: int) -> str | None:
    """What stopping at `epochs` would have cost in an earlier training: its val AUC there against its best.

    An upper bound on the loss: a shorter cosine schedule decays sooner, which an epoch cut from a longer one
    did not. None where the history has no val AUC that far.
    """
    values = [v for v in (history or {}).get("val_auc", []) if v is not None and not math.isnan(v)]
    if len(values) < epochs or epochs < 1:
        return None
    best = max(values)
    at = max(values[:epochs])
    return (
        f"last training's best val AUC in its first {epochs} epochs was {at:.3f} against {best:.3f} "
        f"over all {len(values)} ({at - best:+.3f}; at most this, as a shorter cosine schedule decays sooner)"
    )


# --- this machine's records: what the planner reads before a night -------------------------------------
__all__ += ["machine_speed", "probe_speed", "last_chain_records", "chains_for", "plan_for_run", "SPEED_DIR"]
PROBE_KILL_SECONDS = 300.0
# The probe times one training alone, in CPU seconds; in a night each training shares the cores with the other
# slot's evaluation and Grad-CAM and with Airflow's own processes. On the AVX2 EPYC night of 2026-12-07
# (bench/results/avx2_zen3_standard_b90.json) the four large trainings took 1.18x their CPU seconds in wall
# time (1.12-1.24 each), while the probe's CPU figure matched their CPU seconds within 2 %.
PROBE_WALL_PER_CPU = 1.18
SPEED_DIR = ".speed"  # under the runs root: the probe's figure per CPU id (no run.json: not a run)


def _read(path: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _runs_newest_first(runs_root: Path) -> list[Path]:
    try:
        runs = [d for d in Path(runs_root).iterdir() if d.is_dir() and (d / "run.json").is_file()]
    except OSError:
        return []
    return sorted(runs, key=lambda d: (d / "run.json").stat().st_mtime, reverse=True)


def _timings(folder: Path) -> dict[str, float]:
    """Seconds of each stage of one chain's last successful attempt (timings.json, written by the pipeline)."""
    record = _read(folder / "timings.json") or {}
    return {s: float(v["seconds"]) for s, v in record.items() if isinstance(v, dict) and v.get("seconds") is not None}


def machine_speed(runs_root: Path, cpu: str, nights: int = 3) -> Speed | None:
    """Speed from the last `nights` runs that trained on this CPU id (graph execution, full sets), or None."""
    records, timings, used = [], [], []
    for run in _runs_newest_first(runs_root):
        found = False
        for path in sorted(run.glob("*/*/training.json")):
            record = _read(path)
            if not record or (record.get("machine") or {}).get("cpu_id") != cpu:
                continue
            if record.get("execution") == "eager":  # smoke and demo runs: not a night's speed
                continue
            records.append(record)
            timings.append(
                {
                    "condition": path.parent.parent.name,
                    "profile": path.parent.name,
                    "mode": record.get("nightly_mode") or "retrain",
                    "training_seconds": record.get("wall_seconds"),
                    "crossval": record.get("estimate") == "cross-validation",
                    **_timings(path.parent),
                }
            )
            found = True
        if found:
            used.append(run.name)
            if len(used) >= nights:
                break
    return speed_from_records(records, cpu, f"training.json of run(s) {', '.join(used)}", timings) if used else None


def probe_speed(
    runs_root: Path, cpu: str, seconds: float = 30.0, run: Callable[[list[str], float], str] | None = None
) -> Speed | None:
    """The probe's speed for this CPU id: cached under the runs root, else measured once (child process)."""
    import json
    import sys

    cache = Path(runs_root) / SPEED_DIR / (re.sub(r"[^A-Za-z0-9._-]+", "_", cpu) + ".json")
    found = _read(cache)
    if not found or found.get("version") != PROBE_VERSION:  # an older probe's figure: measured again
        command = [sys.executable, "-m", "medcore.nights.speed_probe", "--seconds", str(seconds)]
        try:
            # The probe times itself for `seconds`; the hard limit only ends a hung child. On a loaded machine
            # importing TensorFlow alone can take a minute (107-125 s in all were measured at load 15-21).
            found = json.loads((run or _run_child)(command, PROBE_KILL_SECONDS).strip().splitlines()[-1])
        except (OSError, ValueError, IndexError, RuntimeError) as exc:
            log.warning("night plan: the speed probe gave no figure (%s)", exc)
            return None
        found = {**found, "cpu_id": cpu}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(found, indent=1))
        except OSError:
            pass  # a read-only runs root: probe again next time
    size, per_image = int(found["image_size"]), float(found["seconds_per_image"])
    return Speed(
        cpu_id=cpu,
        source=f"a {found.get('steps', '?')}-step probe ({found.get('execution', 'eager')}, {found.get('precision')})",
        # An epoch also passes over val (a fifth of train, forward only): about 7 % on top of the training images.
        seconds_per_image_epoch={size: per_image * (1 + 0.2 * INFERENCE_SHARE) * PROBE_WALL_PER_CPU},
    )


def _run_child(command: list[str], timeout: float) -> str:
    import subprocess

    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"probe took over {timeout:.0f} s") from exc
    if done.returncode:
        raise RuntimeError(f"probe failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return done.stdout


def last_chain_records(runs_root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest training.json and validation.json of each (condition, profile) in any earlier run."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for run in _runs_newest_first(runs_root):
        for path in run.glob("*/*/training.json"):
            key = (path.parent.parent.name, path.parent.name)
            if key not in found:
                found[key] = {"training": _read(path) or {}, "validation": _read(path.parent / "validation.json") or {}}
    return found


def _file_sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def split_estimate(config: Any, condition: Any, profile: Any) -> tuple[int, int, int, bool] | None:
    """(train, val, test images, cross-validated) as validation would split the set, from its listing alone.

    For a chain never trained before. The split is drawn as validation draws it (by patient where one is
    known, else by file; nothing is decoded, so duplicates are not joined), which is close enough to count
    images and to see that a small set's test split will send it to cross-validation, whose fold trainings
    dominate its chain (a 215-image set cost 4x its one-training prediction on an AVX2 night without this).
    None where the dataset cannot be listed.
    """
    from medcore.assess.crossval import needs_cross_validation
    from medcore.data.datasets import assign_splits, cap_per_split, read_source
    from medcore.data.validation import _cross_split
    from medcore.errors import MedcoreError

    try:
        frame = read_source(config, condition).frame
        frame = frame[frame["label"] >= 0]
        settings = config.validation_for(condition)
        if settings.policy.get("group_leakage") == "drop":  # patients in two given splits lose one side's rows
            known = frame[frame["group_known"]]
            frame = frame.drop(_cross_split(known, known["group"], settings.leak_drop_from)[1])
        # Validation's own keys, so that the draws match it: the patient where one is known, else the bytes' hash
        # (the real sets are 148 MiB in all, so hashing the files without a patient takes about a second).
        unknown = ~frame["group_known"].to_numpy(dtype=bool)
        keys = "group:" + frame["group"].astype(str)
        keys[unknown] = ["sha256:" + _file_sha256(path) for path in frame["path"][unknown]]
        frame = assign_splits(
            frame.assign(split_group=keys.astype(str)),
            config.val_fraction,
            config.test_fraction,
            config.seed,
            group_column="split_group",
        )
    except (MedcoreError, ValueError, OSError) as exc:
        log.info("%s: no split estimate for the plan (%s)", condition.name, exc)
        return None
    frame = cap_per_split(frame, profile.max_images_per_split, config.seed)
    counts = frame["split"].value_counts()
    sizes = (int(counts.get("train", 0)), int(counts.get("val", 0)), int(counts.get("test", 0)))
    return (*sizes, needs_cross_validation(frame, config.evaluation))


def chains_for(config: Any, jobs: Sequence[Mapping[str, Any]], runs_root: Path | None = None) -> list[Chain]:
    """Tonight's chains for `jobs`: image counts from the last run that trained them (else the dataset's files),
    the mode the registry implies (warm start once a champion exists), and the epochs that mode trains."""
    from medcore.nights.nightly import continue_epochs
    from medcore.nights.registry import read_record, registry_of

    last = last_chain_records(runs_root or config.runs_root)
    registry = registry_of(config)
    share = config.night.min_epoch_share
    chains, estimated = [], {}
    for job in jobs:
        condition = config.conditions[job["condition"]]
        profile = config.profiles[job["profile"]].for_condition(condition)
        before = last.get((condition.name, profile.name), {})
        training, counts = before.get("training") or {}, (before.get("validation") or {}).get("counts") or {}
        if training.get("train_images"):
            train, val = int(training["train_images"]), int(training.get("val_images") or 0)
            test = sum((counts.get("test") or {}).values()) or val
            crossval = training.get("estimate") == "cross-validation"
            if profile.max_images_per_split:
                train, val, test = (min(n, profile.max_images_per_split) for n in (train, val, test))
        else:
            key = (condition.name, profile.max_images_per_split)
            if key not in estimated:
                estimated[key] = split_estimate(config, condition, profile) or (0, 0, 0, False)
            train, val, test, crossval = estimated[key]
        epochs = int(job.get("epochs") or profile.epochs)
        champion = read_record(registry, condition.name).get("champion")
        policy = condition.nightly_policy or config.nightly.policy
        limit = config.nightly.max_warm_starts
        warm = champion and policy != "retrain" and (not limit or (champion.get("warm_starts") or 0) < limit)
        mode = "continue" if warm else "retrain"
        if warm:
            epochs = continue_epochs(epochs, config.nightly.continue_epochs)
        chains.append(
            Chain(
                condition=condition.name,
                profile=profile.name,
                image_size=profile.image_size,
                epochs=epochs,
                train_images=train,
                val_images=val,
                test_images=test,
                mode=mode,
                crossval_trainings=config.evaluation.crossval_folds * config.evaluation.crossval_repeats
                if crossval
                else 0,
                cores=int(job.get("cores") or 1),
                min_epochs=max(1, math.ceil(epochs * share - 1e-9)),
            )
        )
    return chains


def good_champions(config: Any, conditions: Iterable[str]) -> dict[str, str]:
    """Conditions whose champion still meets the registry's minimum tier, with the words saying so."""
    from medcore.config import TIER_ORDER
    from medcore.nights.registry import read_record, registry_of

    registry, floor = registry_of(config), config.registry.min_tier
    good = {}
    for name in conditions:
        champion = read_record(registry, name).get("champion") or {}
        metrics = champion.get("metrics") or {}
        tier = metrics.get("quality_tier") or metrics.get("tier")  # the registry keeps `quality_tier`
        if tier in TIER_ORDER and floor in TIER_ORDER and TIER_ORDER.index(tier) <= TIER_ORDER.index(floor):
            good[name] = f"{champion.get('run_id')}/{champion.get('profile')}, tier {tier}"
    return good


def plan_for_run(
    config: Any,
    jobs: Sequence[Mapping[str, Any]],
    budget_minutes: float | None = None,
    cpu: str | None = None,
    probe: Callable[[Path, str], Speed | None] | None = None,
) -> NightPlan | None:
    """The night plan for `jobs` on this machine, or None when no speed is known (no night, no probe)."""
    import os

    from medcore.config import settings

    cpu = cpu or cpu_id()
    runs_root = Path(config.runs_root)
    speed = machine_speed(runs_root, cpu)
    # MEDCORE_PROBE=0: never probe (tests; a machine where a 30 s TensorFlow child is unwelcome).
    if speed is None and config.night.probe and settings().probe:
        speed = (probe or probe_speed)(runs_root, cpu)
    if speed is None:
        return None
    chains = chains_for(config, jobs, runs_root)
    kind = "cold" if any(c.mode == "retrain" for c in chains) else "following"
    budget = budget_minutes or getattr(config.night.budget_minutes, kind)
    last = last_chain_records(runs_root)

    def epoch_cost(chain: Chain, epochs: int) -> str | None:
        return epoch_cost_from_history((last.get(chain.key, {}).get("training") or {}).get("history"), epochs)

    slots = os.cpu_count() or 1
    plan = fit_night(
        chains,
        speed,
        budget,
        slots,
        good_champions(config, {c.condition for c in chains}),
        config.night.keep_profile,
        epoch_cost,
    )
    return dataclasses.replace(plan, notes=[f"{kind} night: budget {budget:.0f} min", *plan.notes])
