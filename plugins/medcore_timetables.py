"""Registers medcore's nightly timetable, so the scheduler and the UI can read the DAG that uses it back."""

from airflow.plugins_manager import AirflowPlugin

from medcore.airflow_adapter import NightlyCron


class MedcoreTimetablesPlugin(AirflowPlugin):
    """`NightlyCron`: enabling the nightly schedule never starts a run before its next slot."""

    name = "medcore_timetables"
    timetables = [NightlyCron]
