"""What every chain stage shares: the job's config and folders, the stage wrapper, the split it reads.

A stage takes a small JSON-able job (run id, runs root, config path, condition, profile) and returns it,
so Airflow passes nothing heavier than that through XCom. `stage` records a failure (stage, one-line
error) in the run layout before re-raising, which is what the report reads, and the stage's timing.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcore.config import Config, load_config, settings
from medcore.errors import Skipped, StageError, one_line
from medcore.jsonio import read_json, write_json
from medcore.layout import ModelLayout, RunLayout

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["STAGES", "Job", "stage", "now", "read_split", "require", "clear_config_cache"]

log = logging.getLogger("medcore.pipeline")  # one logger for the pipeline's modules: the log lines read as before
STAGES = ("validate", "train", "evaluate", "gradcam")
Job = dict[str, Any]


@functools.lru_cache(maxsize=8)
def _config(path: str, _env: tuple) -> Config:
    return load_config(path)


def _load(job: Job) -> tuple[Config, ModelLayout]:
    env = (settings().data_root, settings().runs_root)
    config = _config(job["config"], env)
    paths = RunLayout(Path(job["runs_root"]), job["run_id"]).model(job["condition"], job["profile"])
    return config, paths


def now() -> str:
    """The time now, UTC, to the second: what every artefact records."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def clear_config_cache() -> None:
    """Forget the configs loaded so far (a test that edits a config or its data between stages)."""
    _config.cache_clear()


def stage(name: str) -> Callable[[Callable[..., Job]], Callable[[Job], Job]]:
    """The chain stage `name`: its body gets (job, config, condition, profile, paths); a failure is recorded in
    failure.json before it re-raises, a skip clears it, a success clears it and records the timing."""

    def decorate(body: Callable[..., Job]) -> Callable[[Job], Job]:
        @functools.wraps(body)
        def run(job: Job) -> Job:
            config, paths = _load(job)
            condition = config.conditions[job["condition"]]
            profile = config.profiles[job["profile"]].for_condition(condition)
            log.info("%s: %s/%s (run %s)", name, condition.name, profile.name, job["run_id"])
            started, clock = now(), time.perf_counter()
            try:
                result = body(job, config, condition, profile, paths)
            except Skipped:
                paths.failure_json.unlink(missing_ok=True)
                raise
            except BaseException as exc:
                write_json(
                    paths.failure_json,
                    {"stage": name, "error": one_line(exc), "type": type(exc).__name__, "time": now()},
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


def read_split(paths: ModelLayout) -> pd.DataFrame:
    if not paths.split_csv.exists():
        raise StageError(f"{paths.split_csv}: no split manifest; the validate stage has not succeeded")
    import pandas as pd

    return pd.read_csv(paths.split_csv, dtype={"relpath": str, "raw_label": str, "group": str, "split": str})


def require(path: Path, stage: str) -> Path:
    if not path.exists():
        raise StageError(f"{path}: missing; the {stage} stage has not succeeded")
    return path
