"""The pipeline stages, shared by the Airflow DAG and `medcore run`.

Each stage takes a small JSON-able job (run id, runs root, config path, condition, profile) and
returns it, so Airflow passes nothing heavier than that through XCom. Each stage records a failure
(stage, one-line error) in the run layout before re-raising, which is what the report reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medcore.config import Config, load_config, settings
from medcore.errors import ConfigError, DataError, MedcoreError, Skipped, StageError, one_line
from medcore.jsonio import atomic_write_text, read_json, write_json
from medcore.layout import ModelLayout, RunLayout
from medcore.model.compute import task_cores
from medcore.progress import eta_text

if TYPE_CHECKING:
    from medcore.report.notify import Deliver

__all__ = [
    "STAGES",
    "plan_run",
    "validate",
    "train",
    "evaluate",
    "gradcam",
    "promote",
    "report",
    "notify",
    "verdict",
    "run_of",
    "nothing_planned",
    "run_all",
]

log = logging.getLogger(__name__)
STAGES = ("validate", "train", "evaluate", "gradcam")
MAX_EPOCHS = 1000  # the trigger form's epochs override
MIN_BUDGET, MAX_BUDGET = 10, 1440  # the trigger form's night budget, in minutes
Job = dict[str, Any]


@functools.lru_cache(maxsize=8)
def _config(path: str, _env: tuple) -> Config:
    return load_config(path)


def _load(job: Job) -> tuple[Config, ModelLayout]:
    env = (settings().data_root, settings().runs_root)
    config = _config(job["config"], env)
    paths = RunLayout(Path(job["runs_root"]), job["run_id"]).model(job["condition"], job["profile"])
    return config, paths


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _stage(name: str) -> Callable[[Callable[..., Job]], Callable[[Job], Job]]:
    def decorate(body: Callable[..., Job]) -> Callable[[Job], Job]:
        @functools.wraps(body)
        def run(job: Job) -> Job:
            config, paths = _load(job)
            condition = config.conditions[job["condition"]]
            profile = config.profiles[job["profile"]].for_condition(condition)
            log.info("%s: %s/%s (run %s)", name, condition.name, profile.name, job["run_id"])
            started, clock = _now(), time.perf_counter()
            try:
                result = body(job, config, condition, profile, paths)
            except Skipped:
                paths.failure_json.unlink(missing_ok=True)
                raise
            except BaseException as exc:
                write_json(
                    paths.failure_json,
                    {"stage": name, "error": one_line(exc), "type": type(exc).__name__, "time": _now()},
                )
                raise
            paths.failure_json.unlink(missing_ok=True)  # a retry that succeeds clears the old failure
            _record_timing(paths, name, started, time.perf_counter() - clock)
            return result

        return run

    return decorate


def _record_timing(paths: ModelLayout, stage: str, started: str, seconds: float) -> None:
    """Add this stage's start and seconds to the chain's timings.json (the actual minutes the report compares)."""
    timings = read_json(paths.timings_json) if paths.timings_json.exists() else {}
    if stage == "validate":  # a chain starts again: an older run's later stages are not this one's
        timings = {}
    write_json(paths.timings_json, {**timings, stage: {"started": started, "seconds": round(seconds, 2)}})


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
        for kind, names, known in (
            ("condition", conditions, config.conditions),
            ("profile", profiles, config.profiles),
        ):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ConfigError(f"{config.path}: unknown {kind} {unknown[0]!r} (known: {', '.join(known)})")
        if epochs is not None and not 1 <= epochs <= MAX_EPOCHS:
            raise ConfigError(f"epochs override must be 1 to {MAX_EPOCHS} (empty keeps each profile's), got {epochs}")
        if budget_minutes is not None and not MIN_BUDGET <= budget_minutes <= MAX_BUDGET:
            raise ConfigError(
                f"budget must be {MIN_BUDGET} to {MAX_BUDGET} minutes (empty keeps the config's), got {budget_minutes}"
            )
        params = {**params, "recipients": recipients(params.get("recipients"))} if params else {}
    except ConfigError as exc:
        # Nothing was planned: run.json says why, so promote, report and verdict can say it too.
        write_json(
            run.run_json,
            {
                "run_id": run_id,
                "started": _now(),
                "config": config.path,
                "data_root": config.data_root,
                "params": {k: v for k, v in (params or {}).items() if k != "recipients"},
                "jobs": [],
                "plan_error": str(exc),
            },
        )
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
    started = read_json(run.run_json)["started"] if run.run_json.exists() else _now()
    if run.plan_json.exists() and run.run_json.exists():  # a retried plan task keeps the night it planned
        jobs = read_json(run.run_json)["jobs"]
    else:
        jobs = _fit_to_budget(config, run, jobs, budget_minutes)
    write_json(
        run.run_json,
        {
            "run_id": run_id,
            "started": started,
            "config": config.path,
            "data_root": config.data_root,
            "params": params,
            "jobs": jobs,
        },
    )
    return jobs


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
    write_json(run.plan_json, {**plan.to_dict(), "planned_at": _now()})
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


@_stage("validate")
def validate(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Check the dataset, write validation.json, the summary and the split manifest; fail if untrainable."""
    from medcore.data.validation import validate_condition

    result = validate_condition(config, condition, profile)
    write_json(paths.validation_json, result.to_dict())
    atomic_write_text(paths.validation_summary, result.summary())
    if not result.ok:
        # A split from an earlier, passing validation must not outlive this verdict: train would use it.
        paths.split_csv.unlink(missing_ok=True)
        raise DataError(f"{condition.name}: {result.reason}")
    atomic_write_text(paths.split_csv, result.manifest.to_csv(index=False))
    write_json(paths.nightly_json, plan_condition(config, condition.name, result.manifest, result.fingerprint))
    return job


def plan_condition(config: Config, condition: str, split: pd.DataFrame, fingerprint: str) -> dict[str, Any]:
    """Tonight's plan for `condition`: what changed since the champion, whether it may be warm-started, the mode."""
    from medcore.nights.nightly import (
        code_version,
        config_digest,
        contamination,
        plan_night,
        read_split,
        read_trained_on,
        split_changes,
    )
    from medcore.nights.registry import read_record, registry_of

    champion = read_record(registry_of(config), condition).get("champion")
    policy = config.conditions[condition].nightly_policy or config.nightly.policy
    tonight = {
        "dataset_fingerprint": fingerprint,
        "config_digest": config_digest(config, condition),
        "code_version": code_version(),
    }
    changes = contaminated = None
    if champion:
        changes = split_changes(read_split(champion.get("split_path")), split)
        contaminated = contamination(read_trained_on(champion.get("trained_on_path")), split)
        champion = {
            **champion,
            "model_available": bool(champion.get("model_path")) and Path(champion["model_path"]).is_file(),
        }
    plan = plan_night(
        policy, champion, tonight, contaminated, config.nightly.skip_unchanged, config.nightly.max_warm_starts
    )
    return {
        **plan,
        "policy": policy,
        **tonight,
        "changes": changes,
        "contamination": contaminated,
        "champion": {
            k: champion.get(k)
            for k in ("run_id", "profile", "promoted", "model_path", "trained_on_path", "model_sha256", "warm_starts")
        }
        if champion
        else None,
    }


def _split(paths: ModelLayout) -> pd.DataFrame:
    if not paths.split_csv.exists():
        raise StageError(f"{paths.split_csv}: no split manifest; the validate stage has not succeeded")
    return pd.read_csv(paths.split_csv, dtype={"relpath": str, "raw_label": str, "group": str, "split": str})


def _require(path: Path, stage: str) -> Path:
    if not path.exists():
        raise StageError(f"{path}: missing; the {stage} stage has not succeeded")
    return path


@_stage("train")
def train(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Train the model on the saved split as tonight's plan says (scratch, warm start or skip); write training.json.

    Where the test split holds too few patients of a class, the estimate comes from cross-validation
    (fold models first) and the model trained here sees all the data (medcore.assess.crossval).
    """
    from medcore.assess.crossval import all_data_split, cross_validate, needs_cross_validation
    from medcore.model.training import train_model
    from medcore.model.warmstart import WarmStartPlan
    from medcore.nights.nightly import CONTINUE, SKIP, growth_share, read_trained_on, warm_epochs

    plan = read_json(paths.nightly_json) if paths.nightly_json.exists() else {"mode": "retrain"}
    if plan["mode"] == SKIP:
        raise Skipped(f"{condition.name}: {plan['reason']}")
    epochs = job.get("epochs") or profile.epochs
    source = warm = None
    split = _split(paths)
    if plan["mode"] == CONTINUE:
        source = plan["champion"]
        growth = growth_share(
            read_trained_on(source.get("trained_on_path")), split.loc[split["split"] == "train", "sha256"]
        )
        warm = WarmStartPlan.from_settings(config.nightly, profile.learning_rate, growth)
        epochs = warm_epochs(epochs, config.nightly.continue_epochs, growth, config.nightly.epochs_by_growth)
        profile = _warm_started(profile, config.nightly.continue_learning_rate)
        warm_start = Path(source["model_path"])
    elif profile.weights == "champion":  # a profile asking for the champion gets none when the plan says scratch
        profile, warm_start = _with(profile, weights="none"), None
    else:
        warm_start = _warm_start(config, condition.name, profile.weights)
    epochs = _budgeted_epochs(job, plan["mode"], epochs)
    deadline = time.monotonic() + 60 * job["train_deadline_minutes"] if job.get("train_deadline_minutes") else None
    crossval = needs_cross_validation(split, config.evaluation)
    if crossval:  # too few test patients to measure anything: estimate out of fold, ship a model of all the data
        log.info(
            "%s/%s: small test split; %d x %d-fold cross-validation",
            condition.name,
            profile.name,
            config.evaluation.crossval_repeats,
            config.evaluation.crossval_folds,
        )
        logits = cross_validate(config, profile, split, paths, epochs=epochs)
        atomic_write_text(paths.crossval_csv, logits.to_csv(index=False))
        split = all_data_split(split)
    else:
        paths.crossval_csv.unlink(missing_ok=True)
    record = train_model(
        config, profile, split, paths, epochs=epochs, warm_start=warm_start, warm=warm, deadline=deadline
    )
    record.update(
        {
            "machine": _machine(),
            "planned_epochs": job.get("planned_epochs"),
            "train_deadline_minutes": job.get("train_deadline_minutes"),
            "dataset_fingerprint": read_json(paths.validation_json)["fingerprint"],
            "nightly_mode": plan["mode"],
            "nightly_reason": plan.get("reason"),
            "warm_start_source": source,
            "estimate": "cross-validation" if crossval else "test split",
        }
    )
    write_json(paths.training_json, record)
    return job


def _budgeted_epochs(job: Job, mode: str, epochs: int) -> int:
    """The epochs tonight's budget allows: the plan's cut where it planned this mode, else the profile's.

    The plan is made before validation decides the mode from the registry; a chain that turns out to
    retrain where a warm start was planned (or the other way) keeps its own epochs, and the log says so.
    """
    planned = job.get("planned_epochs")
    if not planned:
        return epochs
    if job.get("planned_mode") not in (None, mode):
        log.warning(
            "%s/%s: planned as %s but trains as %s; the budget's %d epochs do not apply, %d do",
            job["condition"], job["profile"], job["planned_mode"], mode, planned, epochs,
        )  # fmt: skip
        return epochs
    return min(epochs, int(planned))


def _machine() -> dict[str, Any]:
    """The CPU kind a training ran on: what the night planner keys its speed figures by."""
    from medcore.nights.budget import cpu_id

    return {"cpu_id": cpu_id(), "cores": os.cpu_count()}


def _with(profile, **changes):
    """`profile` with some keys changed (dataclass or pydantic model alike)."""
    if hasattr(profile, "model_copy"):
        return profile.model_copy(update=changes)
    import dataclasses

    return dataclasses.replace(profile, **changes)


def _warm_started(profile, rate_share: float):
    """The profile a warm start from the champion trains: its weights, at a share of the profile's rates.

    The champion has converged; a first epoch at the scratch rate (1e-3) threw that away (val AUC 0.99 -> 0.70
    on a 30 % pneumonia set, docs/decisions/0009-warm-start-continue.md) and the night paid an epoch to get it back.
    """
    tuned = profile.fine_tune_learning_rate
    return _with(
        profile,
        weights="champion",
        learning_rate=profile.learning_rate * rate_share,
        fine_tune_learning_rate=None if tuned is None else tuned * rate_share,
    )


def _warm_start(config: Config, condition: str, weights: str) -> Path | None:
    """The shared backbone a profile's `weights: shared` starts from, if `medcore pretrain` wrote it yet."""
    if weights == "shared":
        from medcore.nights.registry import registry_of

        path = registry_of(config).shared_backbone
        return path if path.is_file() else None
    return None


@_stage("evaluate")
def evaluate(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Pick the threshold on val, measure test with bootstrap intervals; write metrics, predictions, plots.

    The chosen threshold also goes into the model contract (model.json), so `medcore predict`
    and anyone scoring new images apply the same decision rule the metrics describe.
    """
    from medcore.assess.evaluation import (
        choose_threshold,
        evaluate_model_splits,
        load_model,
        render_plots,
        selection_figures,
    )
    from medcore.data.datasets import read_studies
    from medcore.jsonio import atomic_write_bytes
    from medcore.model.contract import read_contract, record_evaluation

    # Checked first: the threshold chosen here is written into this contract, which must be this model's.
    contract = read_contract(_require(paths.model, "train"), paths.model_contract)
    if contract is None:  # train renames the model before writing its contract: a crash in between
        raise StageError(f"{paths.model_contract}: missing beside the model; the train stage did not finish")
    model = load_model(paths.model, eager=profile.execution == "eager")
    split = _split(paths)
    studies = read_studies(config, condition)
    if studies:  # MURA labels studies: the figures that compare with its published ones are per study
        split["study"] = split["relpath"].map(studies).fillna(split["relpath"])
    if paths.crossval_csv.exists():  # a small set: figures from the pooled out-of-fold predictions
        from medcore.assess.crossval import crossval_metrics
        from medcore.assess.evaluation import calibration_report, fit_temperature, predict_logits, sigmoid

        metrics, predictions = crossval_metrics(
            pd.read_csv(paths.crossval_csv, dtype={"group": str, "relpath": str}), config.evaluation, seed=config.seed
        )
        metrics["calibration"] = calibration_report(
            predictions["label"].to_numpy(),
            predictions["logit"].to_numpy(),
            metrics["temperature"],
            groups=predictions["group"].to_numpy(),
            settings=config.evaluation,
            seed=config.seed,
        )
        # The shipped model scores new images: its own temperature and threshold, fitted on its val split.
        val = split[split["split"] == "val"].reset_index(drop=True)
        val_logits = predict_logits(model, val, profile)
        shipped_t = fit_temperature(val["label"].to_numpy(), val_logits) if config.evaluation.calibrate else 1.0
        shipped = choose_threshold(
            val["label"].to_numpy(),
            sigmoid(val_logits, shipped_t),
            config.evaluation.threshold_rule,
            config.evaluation.target_sensitivity,
        )
        metrics["shipped_model"] = {"temperature": shipped_t, "threshold": shipped.value, "threshold_split": "val"}
        val_predictions = val[["relpath", "path", "label", "group"]].assign(probability=sigmoid(val_logits, shipped_t))
        # Decisions read the shipped model's own val figures; its out-of-fold test figures are not one model's.
        metrics["selection"] = selection_figures(
            val, val_predictions["probability"].to_numpy(), config.evaluation, config.seed
        )
        metrics["versus_champion"] = None
    else:
        metrics, predictions, val_predictions = evaluate_model_splits(
            model, split, profile, config.evaluation, seed=config.seed, study_aggregation=condition.study_aggregation
        )
        metrics["versus_champion"] = _versus_champion(
            config, condition.name, split, paths, val_predictions, predictions
        )
    atomic_write_text(paths.val_predictions_csv, val_predictions.to_csv(index=False))
    if condition.reference:
        metrics["reference"] = condition.reference
    # Plots are per image (as predictions.csv), at the image-level threshold.
    plots = render_plots(
        predictions["label"].to_numpy(),
        predictions["probability"].to_numpy(),
        metrics.get("image_level", metrics),
        f"{condition.name}/{profile.name}",
        config.evaluation.calibration_bins,
    )
    for name, png in plots.items():
        atomic_write_bytes(paths.plot(name), png)
    metrics["plots"] = {name: paths.plot(name) for name in plots}
    metrics["model_path"] = paths.model
    atomic_write_text(paths.predictions_csv, predictions.to_csv(index=False))
    write_json(paths.metrics_json, metrics)

    record_evaluation(paths.model_contract, contract, metrics, paths.metrics_json)
    _write_card(config, condition, profile, paths)
    return job


def _versus_champion(
    config: Config,
    condition: str,
    split: pd.DataFrame,
    paths: ModelLayout,
    val_predictions: pd.DataFrame,
    test_predictions: pd.DataFrame,
) -> dict[str, Any] | None:
    """Re-score the champion (inference only) on this chain's val and test images and compare paired.

    The selection comparison decides promotion; the test comparison is only reported. None when
    there is no champion; `champion_missing` says why when its model cannot be scored.
    """
    from medcore.assess.evaluation import load_model, paired_auc_difference, predict_probabilities
    from medcore.nights.registry import champion_id, read_record, registry_of

    champion = read_record(registry_of(config), condition).get("champion")
    if not champion:
        return None
    result: dict[str, Any] = {"champion": champion_id(champion), "champion_promoted": champion.get("promoted")}
    path = Path(champion.get("model_path") or "")
    try:
        model = load_model(path)
        size = int(model.inputs[0].shape[1])
    except Exception as exc:  # noqa: BLE001 noqa: BLE001 - a champion that cannot be loaded must not fail tonight's model
        return {**result, "champion_missing": f"{path}: {one_line(exc)}"}
    scorer = _with_size(config.profiles[paths.profile], size)
    try:  # the champion is scored as it was trained: its own resize (squash or pad), from its contract
        from medcore.model.contract import read_contract

        resize = (read_contract(path, champion.get("contract_path")) or {}).get("resize", "squash")
        scorer = dataclasses.replace(scorer, resize=resize if resize in ("squash", "pad") else "squash")
    except MedcoreError as exc:
        return {**result, "champion_missing": f"{path}: {one_line(exc)}"}
    scored = []
    for name, ours in (("selection", val_predictions), ("test", test_predictions)):
        rows = split[split["split"] == ("val" if name == "selection" else "test")].reset_index(drop=True)
        theirs = predict_probabilities(model, rows, scorer)
        scored.append(
            pd.DataFrame(
                {"relpath": rows["relpath"], "split": rows["split"], "label": rows["label"], "probability": theirs}
            )
        )
        groups = rows["group"].astype(str).to_numpy() if "group" in rows.columns else None
        try:
            result[name] = paired_auc_difference(
                rows["label"].to_numpy(),
                ours["probability"].to_numpy(),
                theirs,
                groups,
                config.evaluation.bootstrap_resamples,
                config.evaluation.confidence,
                seed=config.seed,
            )
        except MedcoreError as exc:
            result[name] = None
            result[f"{name}_problem"] = str(exc)
    atomic_write_text(paths.champion_predictions_csv, pd.concat(scored).to_csv(index=False))
    return result


def _with_size(profile, size: int):
    """`profile` scoring at another image size (the champion's input size)."""
    if hasattr(profile, "model_copy"):
        return profile.model_copy(update={"image_size": size})
    import dataclasses

    return dataclasses.replace(profile, image_size=size)


def _write_card(config: Config, condition, profile, paths: ModelLayout) -> None:
    """model_card.md from the artefacts so far; written after evaluate and again after Grad-CAM."""
    from medcore.assess.model_card import write_model_card

    write_model_card(config, condition, profile, paths)


@_stage("gradcam")
def gradcam(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Overlays of the most confident TP/TN/FP/FN test images, a contact sheet, and the deletion test."""
    from medcore.assess.gradcam import explain_model

    _require(paths.model, "train")
    _require(paths.predictions_csv, "evaluate")
    explain_model(paths, config.gradcam, f"{condition.name}/{profile.name}")
    _write_card(config, condition, profile, paths)
    return job


def promote(run_id: str, runs_root: str | os.PathLike[str]) -> dict[str, Any]:
    """Decide, once per condition of the run, whether its best model becomes the champion; write promotion.json.

    Runs after every chain, whatever they did: a condition whose models all failed gets a decision
    too ("kept champion" or "no champion"). One condition's registry error never stops the others;
    the stage still fails afterwards so the error is visible, and the report shows it.
    """
    from medcore.nights.registry import promote_condition, registry_of

    run = RunLayout(Path(runs_root), run_id)
    info = read_json(run.run_json)
    if not info["jobs"]:  # the plan was refused: nothing to decide, and promotion.json would claim a decision
        log.info("promote: nothing was planned (%s)", info.get("plan_error"))
        return {"run_id": run_id, "promotion": None, "decisions": {}}
    config = load_config(info["config"])
    registry = registry_of(config)
    profiles: dict[str, list[str]] = {}
    for job in info["jobs"]:
        profiles.setdefault(job["condition"], []).append(job["profile"])
    now, decisions, errors = _now(), {}, []
    for condition, names in profiles.items():
        try:
            decisions[condition] = promote_condition(
                registry, condition, [run.model(condition, p) for p in names], run_id, config.registry, now
            )
        except Exception as exc:  # noqa: BLE001 the registry of one condition must not cost the others their decision
            log.error("promote %s: %s", condition, one_line(exc))
            decisions[condition] = {"condition": condition, "decision": "error", "reason": one_line(exc)}
            errors.append(f"{condition}: {one_line(exc)}")
    write_json(
        run.promotion_json,
        {
            "run_id": run_id,
            "decided": now,
            "registry": registry.root,
            "gates": dict(config.registry.gates),
            "min_tier": config.registry.min_tier,
            "margin": config.registry.margin,
            "selection_split": "val",
            "conditions": decisions,
        },
    )
    for condition, decision in decisions.items():
        log.info("champion %s: %s (%s)", condition, decision["decision"], decision["reason"])
    if errors:
        raise StageError(f"promotion failed for {len(errors)} condition(s): {'; '.join(errors)}")
    return {
        "run_id": run_id,
        "promotion": str(run.promotion_json),
        "decisions": {c: d["decision"] for c, d in decisions.items()},
    }


def report(run_id: str, runs_root: str | os.PathLike[str]) -> dict[str, Any]:
    """Render the run's status report; return its path and the count of failed models."""
    from medcore.report.render import write_report

    return write_report(RunLayout(Path(runs_root), run_id))


def notify(
    run_id: str,
    runs_root: str | os.PathLike[str],
    to: Iterable[str] = (),
    config_path: str | None = None,
    deliver: Deliver | None = None,
) -> dict[str, Any]:
    """E-mail the written report; return what happened (also in notify.json). Never raises for a failed send.

    Recipients: `to` (`medcore resend --to`), else the trigger parameter `recipients`, else the config's
    `notify.recipients`; the SMTP connection id: the trigger parameter `smtp_conn_id`, else the config's.
    """
    import dataclasses

    from medcore.jsonio import to_jsonable
    from medcore.report.notify import send_report

    if deliver is None:  # mail goes through the adapter, the one module that meets Airflow (its SMTP hook)
        from medcore.airflow_adapter import deliver

    run = RunLayout(Path(runs_root), run_id)
    info = read_json(run.run_json)
    settings = load_config(config_path or info["config"]).notify
    params = info.get("params") or {}
    chosen = recipients(to) or recipients(params.get("recipients"))
    if chosen:
        settings = dataclasses.replace(settings, recipients=tuple(chosen))
    if params.get("smtp_conn_id"):
        settings = dataclasses.replace(settings, conn_id=str(params["smtp_conn_id"]))
    return to_jsonable(send_report(run, settings, deliver))


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


def verdict(summary: dict[str, Any]) -> str:
    """The run's verdict as the report computed it (summary.json): raise StageError if it is "failed" or the
    report e-mail failed; return its words otherwise ("look: ..." or "OK: ...")."""
    problems = []
    if summary.get("plan_error"):
        problems.append(f"the run did not start: {summary['plan_error']}")
    if summary["failed"]:
        names = ", ".join(f"{f['condition']}/{f['profile']} ({f['stage']})" for f in summary["failures"])
        problems.append(f"{summary['failed']} of {summary['planned']} models failed: {names}")
    run = RunLayout(Path(summary["report"]).parent.parent, summary["run_id"])
    delivery = read_json(run.notify_json) if run.notify_json.exists() else {}
    if delivery.get("status") == "failed":
        problems.append(
            f"the report e-mail was not sent ({delivery.get('error')}); the report is at {summary['report']}"
        )
    if problems:
        raise StageError(f"{summary.get('verdict_words') or 'failed'}; " + "; ".join(problems))
    words = summary.get("verdict_words") or "OK"
    log.log(
        logging.WARNING if summary.get("verdict") == "look" else logging.INFO,
        "verdict %s (%s)",
        words,
        summary.get("verdict_why") or "nothing needs a person",
    )
    return words


def nothing_planned(run_id: str, config_path: str | None) -> tuple[str, str]:
    """(run id, runs root) for the tasks after a refused plan, which got no jobs from it."""
    return run_id, str(load_config(config_path).runs_root)


def run_chain(job: Job) -> bool:
    """Run every stage of one job in order; return False (never raise) if a stage fails."""
    for stage in (validate, train, evaluate, gradcam):
        try:
            stage(job)
        except Skipped as exc:
            log.info("%s/%s skipped: %s", job["condition"], job["profile"], exc)
            return True
        except Exception as exc:  # noqa: BLE001 one condition's failure never takes down another
            log.error("%s/%s failed at %s: %s", job["condition"], job["profile"], stage.__name__, one_line(exc))
            return False
    return True


@contextlib.contextmanager
def run_lock(run: RunLayout) -> Iterator[None]:
    """Hold the run folder for the life of a run: a second run of the same id is refused, not interleaved.

    flock on `<run>/.lock`, released by the kernel when this process ends, however it ends.
    """
    import fcntl
    import socket

    run.root.mkdir(parents=True, exist_ok=True)
    path = run.root / ".lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = " ".join(handle.read(200).split()) or "unknown"
            raise StageError(
                f"run {run.run_id}: already running ({path} held by {holder}); wait for it or pick another --run-id"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"host {socket.gethostname()} pid {os.getpid()} since {_now()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def run_all(
    config_path: str | None,
    run_id: str,
    conditions: Iterable[str] = (),
    profiles: Iterable[str] = (),
    epochs: int | None = None,
    budget_minutes: float | None = None,
) -> dict[str, Any]:
    """Plan (the same night budget as the DAG's), run every chain in this process, and write the report:
    `medcore run` without Airflow.

    The run folder is locked throughout (`run_lock`): a second run of the same id is a one-line StageError.
    """
    runs_root = load_config(config_path).runs_root
    with run_lock(RunLayout(runs_root, run_id)):
        jobs = plan_run(
            config_path,
            run_id,
            conditions,
            profiles,
            epochs,
            params={
                "conditions": list(conditions),
                "profiles": list(profiles),
                "epochs": epochs,
                "budget_minutes": budget_minutes,
            },
            budget_minutes=budget_minutes,
        )
        started = time.perf_counter()
        for done, job in enumerate(jobs):
            spent = time.perf_counter() - started
            left = f"; {eta_text(spent, done / len(jobs))}" if done else ""
            log.info(
                "model %d/%d: %s/%s (%d done%s)", done + 1, len(jobs), job["condition"], job["profile"], done, left
            )
            run_chain(job)
        try:
            promote(run_id, runs_root)
        except Exception as exc:  # noqa: BLE001 as in the DAG: the report is written whatever promotion did
            log.error("promotion failed: %s", one_line(exc))
        return report(run_id, runs_root)
