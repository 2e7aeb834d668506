"""NightlyCron: the next run is never a slot from the past, except one just due that the scheduler was late for."""

from __future__ import annotations

import pendulum
import pytest
from airflow.timetables.base import TimeRestriction

from medcore.airflow_adapter import NightlyCron

NIGHTLY = NightlyCron("0 1 * * *", timezone="UTC")


def _at(day: int, hour: int, minute: int = 0):
    return pendulum.datetime(2026, 11, day, hour, minute, tz="UTC")


@pytest.mark.parametrize(
    ("now", "last_end", "expected"),
    [
        (_at(30, 9), None, pendulum.datetime(2026, 12, 1, 1, tz="UTC")),  # enabled at 09:00: the next 01:00
        (
            _at(30, 9),
            _at(20, 1),
            pendulum.datetime(2026, 12, 1, 1, tz="UTC"),
        ),  # off for ten days: no backlog, no catch-up
        (_at(30, 0, 59), _at(29, 1), _at(30, 1)),  # the normal night
        (_at(30, 1, 3), _at(29, 1), _at(30, 1)),  # the scheduler 3 minutes late: tonight still runs
        (_at(30, 1, 3), _at(30, 1), pendulum.datetime(2026, 12, 1, 1, tz="UTC")),  # ... but only once
        (
            _at(30, 1, 6),
            None,
            pendulum.datetime(2026, 12, 1, 1, tz="UTC"),
        ),  # enabled 6 minutes after the slot: tomorrow
    ],
)
def test_next_slot(now, last_end, expected):
    """The slot chosen for each moment the schedule is (re)enabled or the scheduler asks."""
    assert NIGHTLY.next_slot(now, last_end) == expected


def test_round_trip_and_catchup_untouched():
    """Serialised and read back it is the same timetable; with catchup=True Airflow's own rule applies."""
    again = NightlyCron.deserialize(NIGHTLY.serialize())
    assert again.serialize() == NIGHTLY.serialize() and again.summary == "0 1 * * * (no catch-up)"
    info = NIGHTLY.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(_at(1, 0), None, True)
    )
    assert info.run_after == _at(1, 1)
