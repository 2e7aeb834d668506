"""The one orchestrator: plan -> chains (validate, train, evaluate, gradcam) -> promote -> report -> notify -> verdict.

Each step is a function here. The DAG's tasks each make one call into a step, through
`medcore.airflow_adapter.call_stage`, which turns `Skipped` and `MedcoreError` into Airflow's outcomes;
`medcore run` (`run_all`) calls the same steps in this process, and `attempt` is its one handler of them.
Steps after the chains take what a DAG task has, the plan's jobs and the run id; the stages they call
(medcore.pipeline.closing) take the run folder.

Nothing here imports pandas or TensorFlow at import time: the DAG imports this module when it is parsed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from medcore.config import load_config
from medcore.errors import Skipped, StageError, one_line
from medcore.jsonio import read_json
from medcore.layout import RunLayout
from medcore.pipeline import closing
from medcore.pipeline.assessing import evaluate, gradcam
from medcore.pipeline.jobs import MAX_BUDGET, MAX_EPOCHS, MIN_BUDGET, jobs_by_slots, nothing_planned, plan_run, run_of
from medcore.pipeline.stage import Job, now
from medcore.pipeline.training import train
from medcore.pipeline.validating import validate
from medcore.progress import eta_text

__all__ = [
    "MAX_EPOCHS",
    "MIN_BUDGET",
    "MAX_BUDGET",
    "CHAIN",
    "plan",
    "validate",
    "train",
    "evaluate",
    "gradcam",
    "route",
    "promote",
    "report",
    "notify",
    "verdict",
    "attempt",
    "run_chain",
    "run_lock",
    "run_all",
    "resend",
]

log = logging.getLogger("medcore.pipeline")
CHAIN = (validate, train, evaluate, gradcam)  # one model's stages, in order


# --- the steps, in the order they run --------------------------------------------------------------------------


def plan(config_path: str | None, run_id: str, params: dict[str, Any]) -> list[Job]:
    """The jobs of the trigger form's `params` (conditions, profiles, epochs, budget_minutes, recipients,
    smtp_conn_id; empty or missing: the config's), fitted into the night; ConfigError for a refused value."""
    return plan_run(
        config_path,
        run_id,
        params.get("conditions") or (),
        params.get("profiles") or (),
        params.get("epochs"),
        params=dict(params),
        budget_minutes=params.get("budget_minutes"),
    )


def route(jobs: list[Job], slots: list[int], mine: int) -> list[Job]:
    """The jobs for the chain holding `mine` pool slots (each job goes to exactly one chain)."""
    return jobs_by_slots(jobs, slots)[f"slots_{mine}"]


def where(jobs: list[Job] | None, run_id: str, config_path: str | None) -> tuple[str, str]:
    """(run id, runs root) of the run: from its jobs, or from the config after a refused plan (no jobs)."""
    return (jobs[0]["run_id"], jobs[0]["runs_root"]) if jobs else nothing_planned(run_id, config_path)


def promote(jobs: list[Job] | None, run_id: str, config_path: str | None) -> dict[str, Any]:
    """Decide per condition whether this run's best model replaces the champion; StageError after writing
    promotion.json if a condition's registry failed."""
    return closing.promote(*where(jobs, run_id, config_path))


def report(jobs: list[Job] | None, run_id: str, config_path: str | None) -> dict[str, Any]:
    """Write the report from whatever the chains left behind (a short one if nothing was planned); its summary."""
    return closing.report(*where(jobs, run_id, config_path))


def notify(jobs: list[Job] | None, run_id: str, config_path: str | None) -> dict[str, Any]:
    """E-mail the written report; the record (notify.json) when sent or skipped (no recipients), StageError
    when the send failed (recorded first: the report is never lost to it)."""
    record = closing.notify(*where(jobs, run_id, config_path))
    if record["status"] == "failed":
        raise StageError(f"report e-mail not sent via {record['conn_id']!r}: {record['error']}")
    return record


def verdict(summary: dict[str, Any]) -> str:
    """The run's verdict as the report computed it: its words (OK or look), or StageError (failed)."""
    return closing.verdict(summary)


# --- `medcore run`: the steps in this process --------------------------------------------------------------------


def attempt(what: str, step: Callable[..., Any], *args: Any, at: str = "") -> str:
    """Run one step for `medcore run`: the one place it handles Skipped and errors, as call_stage does for the DAG.
    "done"; "skipped" (logged); or "failed", any error logged in one line. Never raises."""
    try:
        step(*args)
    except Skipped as exc:
        log.info("%s skipped: %s", what, exc)
        return "skipped"
    except Exception as exc:  # noqa: BLE001 one condition's failure never takes down another, nor the report
        log.error("%s failed%s: %s", what, f" at {at}" if at else "", one_line(exc))
        return "failed"
    return "done"


def run_chain(job: Job) -> bool:
    """Run every stage of one job in order; return False (never raise) if a stage fails. A skip ends the chain."""
    for stage in CHAIN:
        outcome = attempt(f"{job['condition']}/{job['profile']}", stage, job, at=stage.__name__)
        if outcome != "done":
            return outcome == "skipped"
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
            handle.write(f"host {socket.gethostname()} pid {os.getpid()} since {now()}\n")
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
    """`medcore run`: every step the DAG runs, in its order, in this process; the folder locked throughout
    (`run_lock`: a second run of the same id is a one-line StageError). A refused plan raises (nothing ran);
    after it, a failed chain or promotion is logged and the report is written whatever they did.

    Returns the report's summary with `notify` (the e-mail record) and `verdict_ok` (False: failed).
    """
    runs_root = load_config(config_path).runs_root
    run = RunLayout(runs_root, run_id)
    with run_lock(run):
        params = {
            "conditions": list(conditions),
            "profiles": list(profiles),
            "epochs": epochs,
            "budget_minutes": budget_minutes,
        }
        jobs = plan(config_path, run_id, params)
        _run_chains(jobs)
        attempt("promotion", promote, jobs, run_id, config_path)
        summary = report(jobs, run_id, config_path)
        attempt("report e-mail", notify, jobs, run_id, config_path)
        judged = attempt("verdict", verdict, summary)
    # notify.json is written whatever the send did; only an error before it (logged above) leaves none.
    sent = read_json(run.notify_json) if run.notify_json.exists() else {"status": "failed", "error": "see the log"}
    return {**summary, "notify": sent, "verdict_ok": judged != "failed" and sent["status"] != "failed"}


def _run_chains(jobs: list[Job]) -> None:
    """Every job's chain, one after another, with the model count and an estimate of the time left."""
    started = time.perf_counter()
    for done, job in enumerate(jobs):
        spent = time.perf_counter() - started
        left = f"; {eta_text(spent, done / len(jobs))}" if done else ""
        log.info("model %d/%d: %s/%s (%d done%s)", done + 1, len(jobs), job["condition"], job["profile"], done, left)
        run_chain(job)


def resend(config_path: str | None, name: str, to: Iterable[str] = ()) -> dict[str, Any]:
    """`medcore resend`: e-mail the report of the run named `name` (its id or folder) again, to `to` if given;
    the notify record (a failed send is in it, not raised)."""
    config = load_config(config_path)
    run = run_of(config.runs_root, name)
    return closing.notify(run.run_id, config.runs_root, to=list(to), config_path=config_path)
