"""Fixtures of the integration suite: one real CeleryExecutor cluster shared by every test that asks for it.

Run with `make test-integration`. Plain `make test` does not collect this folder (pyproject's addopts).
"""

from __future__ import annotations

import sys

import pytest

from tests.integration.cluster import Cluster, servers_missing

# Conditions of the happy-path run: two chains, so both `training` pool slots are used at once.
HAPPY_CONDITIONS = ["pneumonia", "knee_osteoporosis"]


@pytest.fixture(scope="session")
def integration_data(tmp_path_factory):
    from medcore.synthetic import write_demo_data

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
        pytest.fail(f"{exc.name} is not installed: the CeleryExecutor path needs psycopg2-binary, asyncpg and "
                    "celery[redis] (pyproject.toml dependencies)", pytrace=False)
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), integration_data)
    try:
        cluster.start()
    except BaseException:
        print(cluster.diagnostics(), file=sys.stderr)
        problems = cluster.close()
        if problems:
            print("cleanup problems: " + "; ".join(problems), file=sys.stderr)
        raise
    yield cluster
    problems = cluster.close()
    assert not problems, "cleanup failed: " + "; ".join(problems)


@pytest.fixture(scope="session")
def happy_run(cluster):
    """One finished run of the DAG: two conditions, profile standard, triggered through the REST API."""
    run_id = cluster.trigger({"conditions": HAPPY_CONDITIONS, "profiles": ["standard"]})
    final = cluster.wait_run(run_id, timeout=480)
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
