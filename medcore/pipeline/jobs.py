"""The run's plan: one job per (condition, profile) the night budget keeps, recorded in run.json."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medcore.config import Config, load_config
from medcore.errors import ConfigError, DataError
from medcore.jsonio import read_json, write_json
from medcore.layout import RunLayout
from medcore.model.compute import task_cores
from medcore.pipeline.stage import Job, now

__all__ = [
    "MAX_EPOCHS",
    "MIN_BUDGET",
    "MAX_BUDGET",
    "recipients",
    "plan_run",
    "jobs_by_slots",
    "nothing_planned",
    "run_of",
]

log = logging.getLogger("medcore.pipeline")
MAX_EPOCHS = 1000  # the trigger form's epochs override (and `medcore pretrain --epochs`)
MIN_BUDGET, MAX_BUDGET = 10, 1440  # the trigger form's night budget, in minutes


def recipients(given: Iterable[str] | None) -> list[str]:
    """The trigger form's addresses without blank lines (its text box keeps a trailing newline as one);
    ConfigError naming the first one that is not an address."""
    addresses = [a.strip() for a in given or () if a and a.strip()]
    for address in addresses:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", address):
            raise ConfigError(f"recipients: {address!r} is not an e-mail address (name@host, one per line)")
    return addresses


def plan_run(
    config_path: str | os.PathLike[str] | None,
    run_id: str,
    conditions: Iterable[str] = (),
    profiles: Iterable[str] = (),
    epochs: int | None = None,
    params: dict[str, Any] | None = None,
    budget_minutes: float | None = None,
) -> list[Job]:
    """Return one job per (condition, profile) the night budget keeps, in pool order; record it in `run.json`.

    Empty `conditions` or `profiles` mean all of them. Unknown names raise ConfigError. The night planner
    (medcore.nights.budget) predicts each chain's minutes on this machine and fits the night into `budget_minutes`
    (default: the config's `night.budget_minutes` for a cold or following night); plan.json and this task's
    log say what it predicted and what it cut, and why.
    """
    config = load_config(config_path)
    run = RunLayout(config.runs_root, run_id)
    conditions, profiles = list(conditions or config.conditions), list(profiles or config.profiles)
    try:
        _check_names(config, conditions, profiles)
        _check_bounds(epochs, budget_minutes)
        params = {**params, "recipients": recipients(params.get("recipients"))} if params else {}
    except ConfigError as exc:
        # Nothing was planned: run.json says why, so promote, report and verdict can say it too.
        _record_run(run, now(), config, {k: v for k, v in (params or {}).items() if k != "recipients"}, [], exc)
        raise
    jobs = [
        {
            "run_id": run_id,
            "runs_root": str(config.runs_root),
            "config": str(config.path),
            "condition": c,
            "profile": p,
            "epochs": epochs,
            "cores": task_cores(config.profiles[p].for_condition(config.conditions[c]).cores),
        }
        for c in conditions
        for p in profiles
    ]
    started = read_json(run.run_json)["started"] if run.run_json.exists() else now()
    if run.plan_json.exists() and run.run_json.exists():  # a retried plan task keeps the night it planned
        jobs = read_json(run.run_json)["jobs"]
    else:
        jobs = _fit_to_budget(config, run, jobs, budget_minutes)
    _record_run(run, started, config, params, jobs)
    return jobs


def _check_names(config: Config, conditions: list[str], profiles: list[str]) -> None:
    """ConfigError naming the first condition or profile the config does not have."""
    for kind, names, known in (("condition", conditions, config.conditions), ("profile", profiles, config.profiles)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"{config.path}: unknown {kind} {unknown[0]!r} (known: {', '.join(known)})")


def _check_bounds(epochs: int | None, budget_minutes: float | None) -> None:
    """ConfigError saying the range when the epochs override or the night budget is outside the form's bounds."""
    if epochs is not None and not 1 <= epochs <= MAX_EPOCHS:
        raise ConfigError(f"epochs override must be 1 to {MAX_EPOCHS} (empty keeps each profile's), got {epochs}")
    if budget_minutes is not None and not MIN_BUDGET <= budget_minutes <= MAX_BUDGET:
        raise ConfigError(
            f"budget must be {MIN_BUDGET} to {MAX_BUDGET} minutes (empty keeps the config's), got {budget_minutes}"
        )


def _record_run(
    run: RunLayout,
    started: str,
    config: Config,
    params: dict[str, Any],
    jobs: list[Job],
    refused: ConfigError | None = None,
) -> None:
    """run.json: the run's start, config, data, parameters and jobs, or (`refused`) why nothing was planned."""
    record = {
        "run_id": run.run_id,
        "started": started,
        "config": config.path,
        "data_root": config.data_root,
        "params": params,
        "jobs": jobs,
    }
    write_json(run.run_json, {**record, "plan_error": str(refused)} if refused else record)


def _fit_to_budget(config: Config, run: RunLayout, jobs: list[Job], budget_minutes: float | None) -> list[Job]:
    """The jobs the night plan keeps, longest first, each with its planned epochs and training deadline."""
    from medcore.nights.budget import plan_for_run

    plan = plan_for_run(config, jobs, budget_minutes)
    if plan is None:
        reason = "no night on this CPU kind was measured and the probe gave no figure: the full plan is kept"
        log.warning("night plan: %s", reason)
        write_json(run.plan_json, {"budget_minutes": budget_minutes, "chains": [], "cuts": [], "notes": [reason]})
        return jobs
    for line in plan.lines():
        log.info("%s", line)
    by_key = {(j["condition"], j["profile"]): j for j in jobs}
    planned = []
    for chain in plan.chains:
        job = dict(by_key[(chain["condition"], chain["profile"])])
        train = chain["predicted_minutes"]["train"]
        job.update(
            planned_mode=chain["mode"],
            planned_epochs=chain["epochs"] if chain["epochs"] < chain["epochs_asked"] else None,
            train_deadline_minutes=round(
                train * (1 + config.night.deadline_margin) + config.night.deadline_slack_minutes, 1
            ),
        )
        planned.append(job)
    write_json(run.plan_json, {**plan.to_dict(), "planned_at": now()})
    return planned


def jobs_by_slots(jobs: list[Job], slots: Iterable[int]) -> dict[str, list[Job]]:
    """Each job under the chain whose pool slots it fits (the most slots not above its cores), keyed `slots_<n>`.

    The DAG's chains are fixed when it is parsed; a job whose profile changed its cores since then goes to
    the nearest chain below (or the smallest), so every job is trained exactly once.
    """
    slots = sorted(set(slots))
    routed: dict[str, list[Job]] = {f"slots_{n}": [] for n in slots}
    for job in jobs:
        fits = [n for n in slots if n <= int(job.get("cores") or 1)]
        routed[f"slots_{fits[-1] if fits else slots[0]}"].append(job)
    return routed


def nothing_planned(run_id: str, config_path: str | None) -> tuple[str, str]:
    """(run id, runs root) for the tasks after a refused plan, which got no jobs from it."""
    return run_id, str(load_config(config_path).runs_root)


def run_of(runs_root: str | os.PathLike[str], name: str) -> RunLayout:
    """The run named by its run id or by its folder name under `runs_root`; DataError naming both otherwise."""
    from medcore.layout import is_run_folder_name

    root = Path(runs_root)
    if is_run_folder_name(name) and (root / name / "run.json").is_file():
        return RunLayout(root, read_json(root / name / "run.json")["run_id"])
    run = RunLayout(root, name)
    if run.run_json.is_file():
        return run
    raise DataError(f"{root}: no run with id or folder name {name!r} (the folder holds no {name}/run.json)")
