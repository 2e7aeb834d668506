"""
### Nightly X-ray classifier retraining

One chain per (condition, profile), mapped at run time: **validate → train → evaluate → gradcam**.
Then, whatever the chains did: **promote** decides once per condition whether the run's best model
becomes the champion (registry), **report** writes `runs/<run id>/report.md`, **notify** e-mails it
(HTML, report.md and Grad-CAM images attached) and turns red if sending fails, and the final
**verdict** fails the run if any model or the e-mail failed, so a red run always has its report.
Reports are browsable under *Training reports* in this UI.

Trigger with parameters to train a subset, or to override every profile's epochs.
Configuration: `$MEDCORE_CONFIG` (default: `conditions.yaml` beside `dags/`).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag, task, task_group

CONFIG = os.environ.get("MEDCORE_CONFIG") or str(Path(__file__).resolve().parent.parent / "conditions.yaml")


def _names(kind: str) -> list[str]:
    """Condition or profile names for the trigger form; empty (free text) if the config is unreadable."""
    from medcore.config import load_config
    from medcore.errors import MedcoreError

    try:
        return list(getattr(load_config(CONFIG), kind))
    except MedcoreError:
        return []  # the plan task reports the config error with file and key; parsing must not fail


def _task_settings():
    """Retries and per-task timeouts from the config (its defaults if the config is unreadable at parse time)."""
    from medcore.config import TaskSettings, load_config
    from medcore.errors import MedcoreError

    try:
        config = load_config(CONFIG)
        return config.tasks, config.tasks.train_minutes(config.profiles)
    except MedcoreError:
        return TaskSettings(), TaskSettings().train_minutes({})


TASKS, TRAIN_MINUTES = _task_settings()


def _minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


def _choices(kind: str) -> dict:
    names = _names(kind)
    return {"type": "string", "enum": names} if names else {"type": "string"}


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule="0 1 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["medcore", "training"],
    # Every task ends by its execution_timeout (sized from the config's `tasks` section), so a hung
    # night is retried and then reported instead of blocking the next one. MEDCORE_RETRY_DELAY_SECONDS: tests.
    default_args={"retries": TASKS.retries, "retry_exponential_backoff": True,
                  "retry_delay": timedelta(seconds=int(os.environ.get("MEDCORE_RETRY_DELAY_SECONDS")
                                                       or TASKS.retry_delay_seconds)),
                  "execution_timeout": _minutes(TASKS.report_minutes)},
    params={
        "conditions": Param([], type="array", items=_choices("conditions"), title="Conditions",
                            description="Conditions to train; empty trains all of them."),
        "profiles": Param([], type="array", items=_choices("profiles"), title="Profiles",
                          description="Training profiles; empty uses all of them."),
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=1000, title="Epochs override",
                        description="Train every model for this many epochs instead of its profile's."),
        "recipients": Param([], type="array", items={"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+$"},
                            title="Report recipients",
                            description="E-mail the report to these addresses; empty uses the config's notify.recipients."),
        "smtp_conn_id": Param(None, type=["null", "string"], minLength=1, title="SMTP connection",
                              description="Airflow connection to send the report through; empty uses the config's."),
    },
)
def medical_training():
    @task(execution_timeout=_minutes(TASKS.report_minutes))
    def plan(params=None, run_id=None) -> list[dict]:
        """Expand the run parameters into one job per (condition, profile)."""
        from medcore.airflow_adapter import call_stage
        from medcore.pipeline import plan_run

        return call_stage(plan_run, CONFIG, run_id, params["conditions"], params["profiles"], params["epochs"],
                          params=dict(params))

    @task(execution_timeout=_minutes(TASKS.validate_minutes))
    def validate(job: dict) -> dict:
        """Check the dataset and save the split manifest."""
        from medcore import pipeline
        from medcore.airflow_adapter import call_stage

        return call_stage(pipeline.validate, job)

    @task(pool="training", pool_slots=1, queue="training", execution_timeout=_minutes(TRAIN_MINUTES))
    def train(job: dict, task=None) -> dict:
        """Train DenseNet121 and save model.keras (one pool slot per core; resumes on retry)."""
        from medcore import pipeline
        from medcore.airflow_adapter import call_training

        return call_training(pipeline.train, job, task.pool_slots)

    @task(execution_timeout=_minutes(TASKS.evaluate_minutes))
    def evaluate(job: dict) -> dict:
        """Measure the model on the held-out test split."""
        from medcore import pipeline
        from medcore.airflow_adapter import call_stage

        return call_stage(pipeline.evaluate, job)

    @task(execution_timeout=_minutes(TASKS.gradcam_minutes))
    def gradcam(job: dict) -> dict:
        """Write Grad-CAM overlays of confident hits and misses."""
        from medcore import pipeline
        from medcore.airflow_adapter import call_stage

        return call_stage(pipeline.gradcam, job)

    @task_group
    def model_chain(job: dict):
        return gradcam(evaluate(train(validate(job))))

    @task(trigger_rule="all_done", retries=0)
    def promote(jobs: list[dict]) -> dict:
        """Decide per condition whether this run's best model replaces the champion (gates, same-split AUC)."""
        from medcore.airflow_adapter import call_stage
        from medcore.pipeline import promote as promote_models

        return call_stage(promote_models, jobs[0]["run_id"], jobs[0]["runs_root"])

    @task(trigger_rule="all_done", retries=0)
    def report(jobs: list[dict]) -> dict:
        """Render the status report from whatever the chains left behind."""
        from medcore.pipeline import report as write_report

        return write_report(jobs[0]["run_id"], jobs[0]["runs_root"])

    @task(retries=0)
    def notify(jobs: list[dict]) -> dict:
        """E-mail the written report; a failed send is recorded in notify.json and fails this task, never the report."""
        from airflow.exceptions import AirflowFailException

        from medcore.airflow_adapter import call_stage
        from medcore.pipeline import notify as send_report

        record = call_stage(send_report, jobs[0]["run_id"], jobs[0]["runs_root"])
        if record["status"] == "failed":
            raise AirflowFailException(f"report e-mail not sent via {record['conn_id']!r}: {record['error']}")
        return record

    @task(trigger_rule="all_done", retries=0)
    def verdict(summary: dict) -> None:
        """Fail the run, after the report exists (and was sent or not), if any model or the e-mail failed."""
        from medcore.airflow_adapter import call_stage
        from medcore.pipeline import verdict as judge

        call_stage(judge, summary)

    jobs = plan()
    chains = model_chain.expand(job=jobs)
    promoted = promote(jobs)
    summary = report(jobs)
    sent = notify(jobs)
    chains >> promoted >> summary >> sent
    sent >> verdict(summary)


medical_training()
