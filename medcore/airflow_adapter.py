"""The one place where medcore meets Airflow: turning medcore's errors into Airflow task outcomes.

A user mistake (bad data, bad config) fails the task at once; retrying cannot fix it and would
only delay the report. Anything else (a killed worker, an out-of-memory) keeps Airflow's retries.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from medcore.errors import MedcoreError, Skipped

__all__ = ["call_stage", "call_training"]

TRAINING_POOL = "training"


def call_stage(stage: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a medcore stage; re-raise MedcoreError as AirflowFailException (no retry), Skipped as a skip."""
    from airflow.exceptions import AirflowFailException, AirflowSkipException

    try:
        return stage(*args, **kwargs)
    except Skipped as exc:  # the chain's later tasks are skipped with it; the report says why
        raise AirflowSkipException(str(exc)) from exc
    except MedcoreError as exc:
        raise AirflowFailException(str(exc)) from exc


def call_training(stage: Callable[..., Any], job: dict, pool_slots: int) -> Any:
    """Run the training stage with as many TensorFlow threads as the task holds pool slots.

    The `training` pool has one slot per core, so tasks sharing the machine never ask for more
    threads than there are cores. `MEDCORE_THREADS` set by the operator (0 = TensorFlow's
    default, as for the serial `airflow dags test`) wins over the pool.
    """
    os.environ.setdefault("MEDCORE_THREADS", str(pool_slots))
    return call_stage(stage, job)
