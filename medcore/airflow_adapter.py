"""The one place where medcore meets Airflow: turning medcore's errors into Airflow task outcomes.

A user mistake (bad data, bad config) fails the task at once; retrying cannot fix it and would
only delay the report. Anything else (a killed worker, an out-of-memory) keeps Airflow's retries.

`NightlyCron` is the nightly DAG's timetable (registered by plugins/medcore_timetables.py, which the
scheduler needs to read it back).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import Any, cast

from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable

from medcore.errors import MedcoreError, Skipped
from medcore.report.notify import DEFAULT_SENDER, Email

__all__ = ["DAG_ID", "call_stage", "call_refusing", "call_training", "NightlyCron", "deliver", "airflow_main"]

DAG_ID = "medical_training"  # the nightly DAG; the manual one is f"{DAG_ID}_manual" (the UI plugin reads its runs)
TRAINING_POOL = "training"


def call_stage(stage: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a step of medcore.pipeline.orchestrator: the DAG's one handler of Skipped (a skip) and MedcoreError
    (AirflowFailException: failed, no retry); anything else keeps Airflow's retries."""
    from airflow.exceptions import AirflowFailException, AirflowSkipException

    try:
        return stage(*args, **kwargs)
    except Skipped as exc:  # the chain's later tasks are skipped with it; the report says why
        raise AirflowSkipException(str(exc)) from exc
    except MedcoreError as exc:
        raise AirflowFailException(str(exc)) from exc


def call_refusing(stage: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a stage whose MedcoreError is the user's mistake (a refused trigger parameter): log its one sentence and
    end the task failed without a traceback (Airflow logs one for every exception but SystemExit). Give the task
    retries=0: a retry cannot fix the parameters."""
    import logging

    try:
        return stage(*args, **kwargs)
    except MedcoreError as exc:
        logging.getLogger("medcore").error("%s", exc)
        raise SystemExit(str(exc)) from None


def call_training(stage: Callable[..., Any], job: dict, pool_slots: int) -> Any:
    """Run the training stage with as many TensorFlow threads as the task holds pool slots.

    The `training` pool has one slot per core, so tasks sharing the machine never ask for more
    threads than there are cores. `MEDCORE_THREADS` set by the operator (0 = TensorFlow's
    default, as for the serial `airflow dags test`) wins over the pool.
    """
    os.environ.setdefault("MEDCORE_THREADS", str(pool_slots))
    return call_stage(stage, job)


class NightlyCron(CronTriggerTimetable):
    """A cron trigger that never runs a slot from the past: enabling the schedule waits for the next slot.

    With catchup=False Airflow's CronTriggerTimetable still runs the most recent past slot when a DAG
    that has run before (or has a start_date) is enabled again, so turning the nightly schedule on at
    09:00 would start a full night's training at once. Here the next run is the next slot after now.
    The one exception is a slot due less than `grace` ago that has not run yet: the scheduler or the
    DAG processor was busy at that minute, and skipping the night for it would be worse.
    """

    def __init__(
        self, cron: str, *, timezone: Any = "UTC", grace: dt.timedelta = dt.timedelta(minutes=5), **kwargs: Any
    ) -> None:
        super().__init__(cron, timezone=timezone, **kwargs)
        self._grace = grace

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> NightlyCron:
        base: Any = CronTriggerTimetable.deserialize(data)  # a CronTriggerTimetable; typed as its base class
        timetable = cls(data["expression"], timezone=base._timezone, interval=base._interval)
        timetable._grace = dt.timedelta(seconds=data.get("grace_seconds", 300))
        return timetable

    def serialize(self) -> dict[str, Any]:
        return {**super().serialize(), "grace_seconds": self._grace.total_seconds()}

    @property
    def summary(self) -> str:
        return f"{self._expression} (no catch-up)"

    def next_slot(self, now: dt.datetime, last_end: dt.datetime | None) -> dt.datetime:
        """The slot to run next, seen at `now`, when the last scheduled run ended its interval at `last_end`."""
        due = self._align_to_prev(cast(Any, now))  # typed for pendulum; any aware datetime works
        window = min(self._grace, (self._get_next(due) - due) / 10)
        if (last_end is None or last_end < due) and now - due <= window:
            return due
        return self._get_next(due)

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        if restriction.catchup:
            return super().next_dagrun_info(
                last_automated_data_interval=last_automated_data_interval, restriction=restriction
            )
        import pendulum

        last = last_automated_data_interval.end if last_automated_data_interval else None
        start = self.next_slot(pendulum.now("UTC"), last)
        if restriction.earliest is not None:
            start = max(start, self._align_to_next(restriction.earliest))
        if restriction.latest is not None and restriction.latest < start:
            return None
        return DagRunInfo.interval(pendulum.instance(start - self._interval), pendulum.instance(start))


# --- e-mail: the SMTP provider's hook and Airflow's connections ---------------------------------------------


def connection(conn_id: str) -> Any:
    """The Airflow connection `conn_id`, wherever it is defined: the UI (metadata database), an AIRFLOW_CONN_
    environment variable or the secrets backend. Inside a task the Task SDK asks the API server, which reads all
    three; outside one (`medcore resend`) the Task SDK's own lookup sees only the environment and the secrets
    backend, so the lookup goes through airflow.models, which reads the same three, the metadata database too."""
    from airflow.sdk.execution_time import task_runner

    if getattr(task_runner, "SUPERVISOR_COMMS", None) is not None:
        from airflow.sdk import Connection

        return Connection.get(conn_id)
    from airflow.models.connection import Connection as StoredConnection

    return StoredConnection.get_connection_from_secrets(conn_id)


def deliver(email: Email, conn_id: str, recipients: tuple[str, ...], from_email: str | None = None) -> None:
    """Send through the Airflow connection `conn_id` (host, port, TLS and login live there), opened by the SMTP
    provider's hook; the message itself is ours (Email.mime), since the hook's own builder cannot inline images.
    The DAG's notify task and `medcore resend` both come here, and find the connection through `connection`."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    class Hook(SmtpHook):
        @classmethod
        def get_connection(cls, conn_id: str) -> Any:
            return connection(conn_id)

    with Hook(smtp_conn_id=conn_id) as hook:
        sender = from_email or hook.from_email or DEFAULT_SENDER
        client: Any = hook._smtp_client  # smtplib.SMTP(_SSL) once the hook is entered (typed with async and None)
        client.send_message(email.mime(sender, recipients), from_addr=sender, to_addrs=list(recipients))


def airflow_main(argv: list[str]) -> None:
    """Airflow's command line with TensorFlow imported first (bin/airflow-dags-test).

    Under `dags test --use-executor` the LocalExecutor forks its workers, and they their task processes,
    from this process: each inherits the import instead of paying it (several seconds of CPU per task,
    40 tasks in the demo). No TensorFlow op runs in this process, so no thread pool or runtime exists yet to
    be forked half-way. The DAG file itself still parses without TensorFlow (tests/test_dag_integrity.py).
    """
    import sys

    import tensorflow  # noqa: F401 - see above
    from airflow.__main__ import main

    sys.argv = ["airflow", *argv]
    main()


if __name__ == "__main__":
    import sys

    airflow_main(sys.argv[1:])
