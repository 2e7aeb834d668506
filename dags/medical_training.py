"""
### X-ray classifier retraining

One chain per (condition, profile), mapped at run time: **validate → train → evaluate → gradcam**.
Then, whatever the chains did: **promote** decides once per condition whether the run's best model
becomes the champion (registry), **report** writes `runs/<run id>/report.md`, **notify** e-mails it
(HTML with its Grad-CAM images inline, report.md attached) and turns red if sending fails, and the
final **verdict** fails the run if any model or the e-mail failed, so a red run always has its report.
Reports are browsable under *Reports* in this UI.

Two DAGs share this one definition:
- `medical_training`: the nightly schedule (01:00 UTC). Enabling it never starts a run before the
  next 01:00, however long it was off; a manual trigger of it runs only what the form says.
- `medical_training_manual`: no schedule, enabled from the start, so *Trigger* runs now whether or
  not the nightly schedule is on. Use this one to train a subset or try an epoch override.

Configuration: `$MEDCORE_CONFIG` (default: `conditions.yaml` beside `dags/`).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import Param, dag, task, task_group

from medcore.airflow_adapter import (
    DAG_ID,
    TRAINING_POOL,
    NightlyCron,
    call_refusing,
    call_stage,
    call_training,
)
from medcore.config import settings
from medcore.pipeline import orchestrator
from medcore.pipeline.orchestrator import MAX_BUDGET, MAX_EPOCHS, MIN_BUDGET

CONFIG = settings().config or str(Path(__file__).resolve().parent.parent / "conditions.yaml")
# MEDCORE_SCHEDULE: a cron expression in UTC; the scheduler tests move it next to the present.
SCHEDULE = settings().schedule


def _parsed_config():
    """The config, loaded once per parse; None if unreadable: the plan task reports that with file and key, and
    parsing must not fail, so the form offers free text, one chain and the default timeouts meanwhile."""
    from medcore.config import load_config

    try:
        return load_config(CONFIG)
    except Exception:  # noqa: BLE001 - see above
        return None


PARSED = _parsed_config()


def _names(kind: str) -> list[str]:
    """Condition or profile names for the trigger form; empty (free text) if the config is unreadable."""
    return list(getattr(PARSED, kind)) if PARSED is not None else []


def _chain_slots() -> list[int]:
    """Pool slots of each model chain: one chain per distinct profile `cores` (1 if the config is unreadable)."""
    from medcore.model.compute import chain_slots

    try:
        return chain_slots(p.cores for p in PARSED.trained_profiles().values()) if PARSED is not None else [1]
    except Exception:  # noqa: BLE001 - the plan task reports the config error with file and key; parsing must not fail
        return [1]


def _chain_id(slots: int) -> str:
    # One-core chains keep the plain name, so runs and links from before per-profile cores still match.
    return "model_chain" if slots == 1 else f"model_chain_{slots}_cores"


def _task_settings():
    """Retries and per-task timeouts from the config (its defaults if the config is unreadable at parse time)."""
    from medcore.config import TaskSettings

    try:
        if PARSED is not None:
            return PARSED.tasks, PARSED.tasks.train_minutes(PARSED.trained_profiles())
    except Exception:  # noqa: BLE001 - as for _chain_slots: the plan task reports the config error
        pass
    return TaskSettings(), TaskSettings().train_minutes({})


TASKS, TRAIN_MINUTES = _task_settings()


def _minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


def _choice_list(kind: str, title: str, description: str) -> Param:
    """An optional multi-select of the config's names: the form offers them (`examples`) and the API checks them
    (`items.enum`); "null" in the type makes the field optional, as an empty selection means all."""
    names = _names(kind)
    items = {"type": "string", "enum": names} if names else {"type": "string"}
    extra = {"examples": names} if names else {}
    return Param(
        None, type=["null", "array"], items=items, uniqueItems=True, title=title, description=description, **extra
    )


# What a schema can say is in the schemas, so the form and the REST API refuse it before a run exists: the
# choices above, the epochs bounds (the form's number box holds its value to 1-1000; the API answers 400) and
# the budget's (10-1440 minutes). A `pattern` failing after Trigger shows as a raw schema dump, so addresses
# are checked by `plan`, which fails alone with one sentence, and the report of a run that did not start says it.
PARAMS = {
    "conditions": _choice_list("conditions", "Conditions", "Conditions to train; none selected trains all of them."),
    "profiles": _choice_list("profiles", "Profiles", "Training profiles; none selected uses all of them."),
    "epochs": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        maximum=MAX_EPOCHS,
        title="Epochs override",
        description=f"Train every model for this many epochs (1 to {MAX_EPOCHS}) instead of its "
        "profile's; empty keeps each profile's.",
    ),
    "budget_minutes": Param(
        None,
        type=["null", "number"],
        minimum=MIN_BUDGET,
        maximum=MAX_BUDGET,
        title="Night budget (minutes)",
        description=f"Fit this run into this many minutes ({MIN_BUDGET} to {MAX_BUDGET}): the planner cuts "
        "epochs, then profiles, then conditions whose champion is still good, and the report says what and why. "
        "Empty uses the config's night.budget_minutes.",
    ),
    "recipients": Param(
        None,
        type=["null", "array"],
        items={"type": "string"},
        title="Report recipients",
        description="E-mail the report to these addresses, one per line; empty uses the config's notify.recipients.",
    ),
    "smtp_conn_id": Param(
        None,
        type=["null", "string"],
        title="SMTP connection",
        description="Airflow connection to send the report through; empty uses the config's.",
    ),
}
COMMON = dict(  # noqa: C408 reads as the DAG(...) keyword arguments it is spread into
    max_active_runs=1,
    # Every task ends by its execution_timeout (sized from the config's `tasks` section), so a hung
    # night is retried and then reported instead of blocking the next one. MEDCORE_RETRY_DELAY_SECONDS: tests.
    default_args={
        "retries": TASKS.retries,
        "retry_exponential_backoff": True,
        "retry_delay": timedelta(
            seconds=TASKS.retry_delay_seconds
            if settings().retry_delay_seconds is None
            else settings().retry_delay_seconds  # 0 counts
        ),
        "execution_timeout": _minutes(TASKS.report_minutes),
    },
    params=PARAMS,
)


# --- the tasks: each is one call into a step of medcore.pipeline.orchestrator --------------------------------


@task(retries=0, execution_timeout=_minutes(TASKS.report_minutes))
def plan(params=None, run_id=None) -> list[dict]:
    """Expand the run parameters into one job per (condition, profile) and fit them into the night's budget.

    The log shows the plan: predicted minutes per chain, the budget, and each cut with its reason. A refused
    parameter fails this task alone, in one sentence.
    """
    return call_refusing(orchestrator.plan, CONFIG, run_id, dict(params))


# Validation takes a `training` slot too. The plan hands the chains to the pool longest first (map index
# order), but the scheduler can only queue what is ready: free, a quick validation's training took the pool
# before a slower one's (an emulated AVX2 night started knee OA, its longest chain, 23 min late). In the pool,
# every validation (the higher priority weight) runs before any training, so the trainings then queue
# together and the scheduler takes them by map index: the plan's order.
@task(pool=TRAINING_POOL, pool_slots=1, execution_timeout=_minutes(TASKS.validate_minutes))
def validate(job: dict) -> dict:
    """Check the dataset and save the split manifest."""
    return call_stage(orchestrator.validate, job)


@task(pool=TRAINING_POOL, pool_slots=1, queue="training", execution_timeout=_minutes(TRAIN_MINUTES))
def train(job: dict, task=None) -> dict:
    """Train DenseNet121 and save model.keras (pool slots = the profile's cores, threads to match; resumes)."""
    return call_training(orchestrator.train, job, task.pool_slots)


@task(execution_timeout=_minutes(TASKS.evaluate_minutes))
def evaluate(job: dict) -> dict:
    """Measure the model on the held-out test split."""
    return call_stage(orchestrator.evaluate, job)


@task(execution_timeout=_minutes(TASKS.gradcam_minutes))
def gradcam(job: dict) -> dict:
    """Write Grad-CAM overlays of confident hits and misses."""
    return call_stage(orchestrator.gradcam, job)


@task(retries=0, execution_timeout=_minutes(TASKS.report_minutes))
def route(jobs: list[dict], slots: list[int], mine: int) -> list[dict]:
    """The jobs for the chain holding `mine` pool slots (each job goes to exactly one chain)."""
    return call_stage(orchestrator.route, jobs, slots, mine)


@task(trigger_rule="all_done", retries=0)
def promote(jobs: list[dict] | None, run_id=None) -> dict:
    """Decide per condition whether this run's best model replaces the champion (gates, same-split AUC)."""
    return call_stage(orchestrator.promote, jobs, run_id, CONFIG)


@task(trigger_rule="all_done", retries=0)
def report(jobs: list[dict] | None, run_id=None) -> dict:
    """Render the status report from whatever the chains left behind (a short one if nothing was planned)."""
    return call_stage(orchestrator.report, jobs, run_id, CONFIG)


@task(retries=0)
def notify(jobs: list[dict], run_id=None) -> dict:
    """E-mail the written report; a failed send is recorded in notify.json and fails this task, never the report."""
    return call_stage(orchestrator.notify, jobs, run_id, CONFIG)


# none_failed: after a refused plan or a failed e-mail this is upstream_failed, so the run fails with one
# red task (the one that says why); otherwise it shows the report's verdict and fails the run on "failed".
@task(trigger_rule="none_failed", retries=0)
def verdict(summary: dict) -> str:
    """The run's verdict as the report computed it: OK or look (its return value), or failed (fails the run)."""
    return call_stage(orchestrator.verdict, summary)


def model_chain(slots: int):
    """The chain for profiles taking `slots` cores: its train task holds that many `training` pool slots."""

    @task_group(group_id=_chain_id(slots))
    def chain(job: dict):
        return gradcam(evaluate(train.override(pool_slots=slots)(validate(job))))

    return chain


def training_pipeline() -> None:
    """The wiring, shared by the nightly and the manual DAG."""
    jobs = plan()
    slots = _chain_slots()
    if slots == [1]:
        chains = [model_chain(1).expand(job=jobs)]
    else:
        chains = [
            model_chain(n).expand(job=route.override(task_id=f"jobs_for_{n}_cores")(jobs, slots, n)) for n in slots
        ]
    promoted = promote(jobs)
    summary = report(jobs)
    sent = notify(jobs)
    chains >> promoted >> summary >> sent
    [jobs, sent] >> verdict(summary)


# No start_date: NightlyCron's first run is the next slot after the schedule is enabled. catchup=False:
# slots missed while it was off are never run (not even the latest, unlike Airflow's own cron timetables).
dag(
    dag_id=DAG_ID,
    doc_md=__doc__,
    schedule=NightlyCron(SCHEDULE, timezone="UTC"),
    catchup=False,
    tags=["medcore", "training", "nightly"],
    **COMMON,
)(training_pipeline)()
# The same tasks without a schedule and enabled from the start: its Trigger runs now, and can never start
# the nightly backlog, whatever the trigger dialog's "unpause" box says.
dag(
    dag_id=f"{DAG_ID}_manual",
    doc_md=__doc__,
    schedule=None,
    is_paused_upon_creation=False,
    tags=["medcore", "training", "manual"],
    **COMMON,
)(training_pipeline)()
