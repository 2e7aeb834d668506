"""The one place where medcore meets Airflow: turning medcore's errors into Airflow task outcomes.

A user mistake (bad data, bad config) fails the task at once; retrying cannot fix it and would
only delay the report. Anything else (a killed worker, an out-of-memory) keeps Airflow's retries.
"""

from __future__ import annotations

from typing import Any, Callable

from medcore.errors import MedcoreError

__all__ = ["call_stage"]


def call_stage(stage: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a medcore stage; re-raise MedcoreError as AirflowFailException (no retry)."""
    from airflow.exceptions import AirflowFailException

    try:
        return stage(*args, **kwargs)
    except MedcoreError as exc:
        raise AirflowFailException(str(exc)) from exc
