"""Fixtures of the integration suite: one real CeleryExecutor cluster shared by every test that asks for it.

Run with `make test-integration`. Plain `make test` does not collect this folder (pyproject's addopts).
"""

from __future__ import annotations

import signal
import sys

import pytest

from tests.integration.cluster import Cluster, reap_abandoned, servers_missing

# Conditions of the happy-path run: two chains, so both `training` pool slots are used at once.
HAPPY_CONDITIONS = ["pneumonia", "knee_osteoporosis"]


@pytest.fixture(scope="session")
def integration_data(tmp_path_factory):
    from medcore.data.synthetic import write_demo_data

    root = tmp_path_factory.mktemp("integration-data")
    write_demo_data(root, per_class=24, size=32, seed=3)
    return root


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, integration_data):
    """Scheduler, dag-processor, api-server and a Celery worker on a fresh PostgreSQL database and Redis."""
    reason = servers_missing()
    if reason:
        pytest.skip(reason)
    try:
        import asyncpg  # noqa: F401  Airflow 3's async metadata engine
        import psycopg2  # noqa: F401
        import redis  # noqa: F401  kombu's Redis transport
    except ImportError as exc:  # a missing driver is the project's fault, not the machine's: fail, loudly
        pytest.fail(
            f"{exc.name} is not installed: the CeleryExecutor path needs psycopg2-binary, asyncpg and "
            "celery[redis] (pyproject.toml dependencies)",
            pytrace=False,
        )
    reaped = reap_abandoned()
    if reaped:
        print(f"cleaned up after killed integration runs: {reaped}", file=sys.stderr)
    # A CI timeout or `kill` sends SIGTERM, which would end pytest without teardown and leave the
    # servers running: turn it into an interrupt, which pytest tears down after.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), integration_data)
    try:
        try:
            cluster.start()
        except BaseException:
            print(cluster.diagnostics(), file=sys.stderr)
            raise
        yield cluster
    finally:
        problems = cluster.close()
        signal.signal(signal.SIGTERM, previous)
    assert not problems, "cleanup failed: " + "; ".join(problems)
    left = cluster.leftovers()
    assert not left, f"the integration cluster left behind: {left}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def happy_run(cluster):
    """One finished run of the DAG: two conditions, profile standard, triggered through the REST API."""
    run_id = cluster.trigger({"conditions": HAPPY_CONDITIONS, "profiles": ["standard"]})
    final = cluster.wait_run(run_id, timeout=900)  # ~4 min on two idle cores; shared cores can take twice that
    return run_id, final


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of every Airflow process log and task log to a failed test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        cluster = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
        if isinstance(cluster, Cluster):
            report.sections.append(("Airflow logs (tails)", cluster.diagnostics()))
