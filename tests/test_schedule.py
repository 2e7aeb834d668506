"""With a real scheduler: enabling the nightly schedule starts nothing before its next slot, and a trigger runs
only what was asked, now, whether or not the schedule is on. A control DAG on Airflow's own cron timetable, in
the same scheduler, shows the scenario is real (it does start the past slot at once)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import textwrap

import pytest

from tests.conftest import ROOT, airflow_home_from
from tests.servers import airflow, start, stop, wait_for

pytestmark = pytest.mark.slow  # a scheduler and a DAG processor for about a minute

CONTROL = """
import os
import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("control_builtin_cron", schedule=os.environ["MEDCORE_SCHEDULE"], catchup=False,
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    EmptyOperator(task_id="nothing")
"""


def _rows(db, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as connection:
        return connection.execute(sql, args).fetchall()


def test_enabling_schedule_and_triggering_start_only_what_was_asked(tmp_path, migrated_airflow_db):
    """Ten minutes after today's slot: unpausing the nightly DAG starts no run (the control DAG's starts at once);
    the manual DAG's trigger runs at once with the nightly DAG paused; a trigger of the nightly DAG with the
    dialog's unpause box ticked (trigger, then unpause) leaves exactly that one manual run."""
    slot = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=10)
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / "medical_training.py", dags)
    (dags / "control_builtin_cron.py").write_text(textwrap.dedent(CONTROL))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "MEDCORE_CONFIG": str(ROOT / "conditions.yaml"),
        "MEDCORE_SCHEDULE": f"{slot.minute} {slot.hour} * * *",
        # No API server on port 9: tasks never start, only the scheduler's decisions are watched.
        "AIRFLOW__API__PORT": "9",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    }
    db = tmp_path / "airflow" / "airflow.db"
    airflow_home_from(migrated_airflow_db, tmp_path / "airflow")
    processes = [
        start(["airflow", "dag-processor"], env, tmp_path / "dag-processor.log"),
        start(["airflow", "scheduler"], env, tmp_path / "scheduler.log"),
    ]
    try:
        wait_for(
            lambda: len(_rows(db, "select dag_id from dag")) == 3,
            180,
            "the DAG processor to store the three DAGs",
            alive=tuple(processes),
        )
        parsed = dict(_rows(db, "select dag_id, is_paused from dag"))
        assert parsed["medical_training_manual"] == 0, "the manual DAG is enabled from creation"
        assert parsed["medical_training"] == 1, "the nightly schedule starts disabled"

        airflow(["airflow", "dags", "trigger", "medical_training_manual"], env)
        airflow(["airflow", "dags", "trigger", "medical_training"], env)  # the dialog with its unpause box ticked
        airflow(["airflow", "dags", "unpause", "medical_training"], env)
        airflow(["airflow", "dags", "unpause", "control_builtin_cron"], env)

        # The scheduler has looped past the unpause once the control DAG's past slot has a run.
        wait_for(
            lambda: _rows(db, "select run_type from dag_run where dag_id = 'control_builtin_cron'"),
            180,
            "the control DAG's scheduled run",
            alive=tuple(processes),
        )
        wait_for(
            lambda: _rows(db, "select state from dag_run where dag_id = 'medical_training_manual'") == [("running",)],
            120,
            "the manual run to start",
            alive=tuple(processes),
        )
        runs = _rows(db, "select dag_id, run_type from dag_run where dag_id like 'medical_training%' order by dag_id")
        assert runs == [("medical_training", "manual"), ("medical_training_manual", "manual")]
        [(next_run,)] = _rows(db, "select next_dagrun_create_after from dag where dag_id = 'medical_training'")
        assert next_run.startswith((slot + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M")), next_run
    finally:
        for process in processes:
            stop(process)
