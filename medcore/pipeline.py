"""The pipeline stages, shared by the Airflow DAG and `medcore run`.

Each stage takes a small JSON-able job (run id, runs root, config path, condition, profile) and
returns it, so Airflow passes nothing heavier than that through XCom. Each stage records a failure
(stage, one-line error) in the run layout before re-raising, which is what the report reads.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from medcore.config import Config, load_config
from medcore.errors import ConfigError, DataError, MedcoreError, StageError
from medcore.jsonio import atomic_write_text, read_json, write_json
from medcore.layout import ModelLayout, RunLayout

__all__ = ["STAGES", "plan_run", "validate", "train", "evaluate", "gradcam", "report", "run_all", "one_line"]

log = logging.getLogger(__name__)
STAGES = ("validate", "train", "evaluate", "gradcam")
Job = dict[str, Any]


def one_line(exc: BaseException) -> str:
    """The error as one line a person can act on: medcore's own messages as they are, others with their type."""
    text = " ".join(str(exc).split()) or "(no message)"
    return text if isinstance(exc, MedcoreError) else f"{type(exc).__name__}: {text}"


@functools.lru_cache(maxsize=8)
def _config(path: str, _env: tuple) -> Config:
    return load_config(path)


def _load(job: Job) -> tuple[Config, ModelLayout]:
    env = tuple(os.environ.get(k) for k in ("MEDCORE_DATA_ROOT", "MEDCORE_RUNS_ROOT"))
    config = _config(job["config"], env)
    paths = RunLayout(Path(job["runs_root"]), job["run_id"]).model(job["condition"], job["profile"])
    return config, paths


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _stage(name: str) -> Callable[[Callable[..., Job]], Callable[[Job], Job]]:
    def decorate(body: Callable[..., Job]) -> Callable[[Job], Job]:
        @functools.wraps(body)
        def run(job: Job) -> Job:
            config, paths = _load(job)
            condition, profile = config.conditions[job["condition"]], config.profiles[job["profile"]]
            log.info("%s: %s/%s (run %s)", name, condition.name, profile.name, job["run_id"])
            try:
                result = body(job, config, condition, profile, paths)
            except BaseException as exc:
                write_json(paths.failure_json, {"stage": name, "error": one_line(exc), "type": type(exc).__name__,
                                                "time": _now()})
                raise
            paths.failure_json.unlink(missing_ok=True)  # a retry that succeeds clears the old failure
            return result

        return run

    return decorate


def plan_run(config_path: str | os.PathLike[str] | None, run_id: str, conditions: Iterable[str] = (),
             profiles: Iterable[str] = (), epochs: int | None = None, params: dict[str, Any] | None = None) -> list[Job]:
    """Return one job per (condition, profile) and record the plan in `run.json`.

    Empty `conditions` or `profiles` mean all of them. Unknown names raise ConfigError.
    """
    config = load_config(config_path)
    conditions, profiles = list(conditions or config.conditions), list(profiles or config.profiles)
    for kind, names, known in (("condition", conditions, config.conditions), ("profile", profiles, config.profiles)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"{config.path}: unknown {kind} {unknown[0]!r} (known: {', '.join(known)})")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"epochs override must be at least 1, got {epochs}")
    run = RunLayout(config.runs_root, run_id)
    jobs = [{"run_id": run_id, "runs_root": str(config.runs_root), "config": str(config.path), "condition": c,
             "profile": p, "epochs": epochs} for c in conditions for p in profiles]
    started = read_json(run.run_json)["started"] if run.run_json.exists() else _now()
    write_json(run.run_json, {"run_id": run_id, "started": started, "config": config.path,
                              "data_root": config.data_root, "params": params or {}, "jobs": jobs})
    return jobs


@_stage("validate")
def validate(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Check the dataset, write validation.json, the summary and the split manifest; fail if untrainable."""
    from medcore.validation import validate_condition

    result = validate_condition(config, condition, profile)
    write_json(paths.validation_json, result.to_dict())
    atomic_write_text(paths.validation_summary, result.summary())
    if not result.ok:
        raise DataError(f"{condition.name}: {result.reason}")
    atomic_write_text(paths.split_csv, result.manifest.to_csv(index=False))
    return job


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
    """Train the model on the saved split and write model.keras and training.json."""
    from medcore.training import train_model

    record = train_model(config, profile, _split(paths), paths, epochs=job.get("epochs"))
    record["dataset_fingerprint"] = read_json(paths.validation_json)["fingerprint"]
    write_json(paths.training_json, record)
    return job


@_stage("evaluate")
def evaluate(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Score the test split with a threshold chosen on val; write metrics.json and predictions.csv."""
    from medcore.evaluation import evaluate_model, load_model

    model = load_model(_require(paths.model, "train"), eager=profile.execution == "eager")
    metrics, predictions = evaluate_model(model, _split(paths), profile)
    metrics["model_path"] = paths.model
    atomic_write_text(paths.predictions_csv, predictions.to_csv(index=False))
    write_json(paths.metrics_json, metrics)
    return job


@_stage("gradcam")
def gradcam(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Write Grad-CAM overlays of the most confident TP/TN/FP/FN test images."""
    import cv2
    import numpy as np

    from medcore.evaluation import load_model
    from medcore.gradcam import gradcam_heatmaps, load_rgb, overlay, pick_examples
    from medcore.jsonio import atomic_write_bytes

    model = load_model(_require(paths.model, "train"), eager=True)
    predictions = pd.read_csv(_require(paths.predictions_csv, "evaluate"))
    picked = pick_examples(predictions, config.gradcam_samples)
    images = np.stack([load_rgb(p, profile.image_size) for p in picked["path"]])
    heatmaps = gradcam_heatmaps(model, images, config.gradcam_layer)
    entries = []
    for i, row in picked.iterrows():
        rank = int((picked["kind"].iloc[:i] == row.kind).sum()) + 1
        target = paths.gradcam_overlay(row.kind, rank)
        caption = f"{row.kind.upper()} p={row.probability:.2f} true={'pos' if row.label else 'neg'}"
        ok, png = cv2.imencode(".png", overlay(images[i], heatmaps[i], caption))
        if not ok:
            raise MedcoreError(f"{target}: cannot encode overlay")
        atomic_write_bytes(target, png.tobytes())
        entries.append({"file": target, "image": row.relpath, "kind": row.kind, "probability": row.probability,
                        "label": int(row.label), "heat_peak": np.unravel_index(int(heatmaps[i].argmax()), heatmaps[i].shape)})
    write_json(paths.gradcam_json, {"layer": config.gradcam_layer, "model_path": paths.model, "overlays": entries})
    return job


def report(run_id: str, runs_root: str | os.PathLike[str]) -> dict[str, Any]:
    """Render the run's status report; return its path and the count of failed models."""
    from medcore.report import write_report

    return write_report(RunLayout(Path(runs_root), run_id))


def run_chain(job: Job) -> bool:
    """Run every stage of one job in order; return False (never raise) if a stage fails."""
    for stage in (validate, train, evaluate, gradcam):
        try:
            stage(job)
        except Exception as exc:  # one condition's failure never takes down another
            log.error("%s/%s failed at %s: %s", job["condition"], job["profile"], stage.__name__, one_line(exc))
            return False
    return True


def run_all(config_path: str | None, run_id: str, conditions: Iterable[str] = (), profiles: Iterable[str] = (),
            epochs: int | None = None) -> dict[str, Any]:
    """Plan, run every chain in this process, and write the report: `medcore run` without Airflow."""
    jobs = plan_run(config_path, run_id, conditions, profiles, epochs,
                    params={"conditions": list(conditions), "profiles": list(profiles), "epochs": epochs})
    for job in jobs:
        run_chain(job)
    return report(run_id, jobs[0]["runs_root"])
