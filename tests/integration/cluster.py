"""A real, throw-away Airflow cluster for the integration tests: the production path on this machine.

`Cluster` makes a fresh metadata database in the local PostgreSQL, points the CeleryExecutor at the
local Redis (under a key prefix of its own), and starts `airflow scheduler`, `airflow dag-processor`,
`airflow api-server` (127.0.0.1 only) and two real `airflow celery worker`s through `bin/airflow-local`,
each in its own session with its own log file. The workers stand for two machines: one serves only
the `training` queue, the other only `default`, and each reports its own host name (Airflow's
`hostname_callable`), so a task instance's `hostname` says which "machine" ran it. They share the
runs folder and the champion registry, as machines sharing an NFS mount would.

The tests talk to the cluster only as a user would: the REST API v2 with a JWT from `POST /auth/token`.
`close()` ends every process it started (whole process trees, by PID), drops its database and
deletes its Redis keys.

Nothing here is mocked. Where PostgreSQL or Redis is not reachable, `servers_missing()` says why
and the tests skip.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_LOCAL = ROOT / "bin" / "airflow-local"
DAG_ID = "medical_training"

# The servers this machine runs; override to point the tests elsewhere (still loopback only).
POSTGRES_URL = os.environ.get("MEDCORE_IT_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("MEDCORE_IT_REDIS", "redis://127.0.0.1:6379/5")

# Integration profiles: the unit tests' tiny 32 px models, from scratch, never stopping early (the
# fault test counts epochs). `standard` trains every run; the fault test sets epochs per run.
PROFILES = """
profiles:
  standard: {image_size: 32, epochs: 1, batch_size: 16, execution: eager, max_images_per_split: 40,
             weights: none, patience: 10}
  intensive: {image_size: 32, epochs: 1, batch_size: 16, execution: eager, max_images_per_split: 40,
              weights: none, patience: 10}
gradcam: {samples: 1, deletion_images: 8, deletion_steps: 4}
evaluation: {small_sets: test_split}   # every tiny test split is small: cross-validation has its own test
# A one-epoch 32 px model cannot meet the real gates; these (null drops a gate conditions.yaml sets)
# let the promote stage promote, so the suite sees a champion copied into the shared registry by the
# worker that did not train it.
registry: {gates: {roc_auc_low: null, recall: null, specificity: null, roc_auc: 0.0}, min_tier: null}
# The suite shares one registry: without this a later test of the same model would be skipped as
# "unchanged since the champion" and the crash test would have no training to kill.
nightly: {policy: retrain, skip_unchanged: false}
"""

TERMINAL = {"success", "failed"}
# The two workers: name -> (queue it serves, the host name it reports).
WORKERS = {"training": ("training", "it-training-host"), "default": ("default", "it-default-host")}
# One file per live cluster (owner, PIDs, database, Redis prefix), so that a later run can clean up
# after one whose pytest was killed before its teardown could run.
STATE_DIR = Path(tempfile.gettempdir()) / "medcore-integration"


def servers_missing() -> str | None:
    """Why the integration tests cannot run here (PostgreSQL or Redis unreachable), or None."""
    problems = []
    for name, url, default_port in (("PostgreSQL", POSTGRES_URL, 5432), ("Redis", REDIS_URL, 6379)):
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or default_port
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as exc:
            problems.append(f"{name} not reachable at {host}:{port} ({exc.strerror or exc})")
    if problems:
        return "; ".join(problems) + " - the CeleryExecutor integration tests need both servers"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree(pid: int, sig: int = signal.SIGKILL, timeout: float = 15.0) -> list[tuple[int, float]]:  # noqa: C901 each race of /proc is a branch
    """Signal `pid` and every process below it, whatever process group each is in; return (PID, start time)s.

    Airflow 3's task supervisor puts each task process in a process group of its own, so killing the
    worker's group alone would leave a training process running as an orphan. The tree is frozen
    first (SIGSTOP) so nothing forks or is re-parented while it is listed.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    if sig == signal.SIGKILL:
        for proc in procs:
            try:
                proc.suspend()
            except psutil.Error:
                pass
        procs = [root, *root.children(recursive=True)]
    own_group = os.getpgrp()
    groups, signalled = set(), []
    for proc in procs:
        try:
            signalled.append((proc.pid, proc.create_time()))
            groups.add(os.getpgid(proc.pid))
            proc.send_signal(sig)
            if sig != signal.SIGKILL:
                proc.resume()  # a stopped process never acts on SIGTERM
        except (psutil.Error, ProcessLookupError):
            pass
    if sig == signal.SIGKILL:
        for group in groups - {own_group, 0, 1}:
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    if alive and sig != signal.SIGKILL:
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=timeout)
    return signalled


def _started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def running(pid: int, started: float) -> bool:
    """True while the process that had this PID and start time is still running (not a zombie)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reap_abandoned() -> list[str]:
    """End the processes and drop the databases of clusters whose pytest died without tearing them down.

    Only what a state file in STATE_DIR records is touched, and a PID only while it still names the
    process that was started (same start time), so a reused PID is never killed.
    """
    reaped = []
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if _started(state["owner"]) == state["owner_started"]:
            continue  # its pytest is still running
        for pid, started in state["procs"]:
            if _started(pid) == started:
                kill_tree(pid, signal.SIGKILL)
        try:
            _drop_database(state["postgres"], state["database"])
            _delete_redis_keys(state["redis"], state["redis_prefix"])
        except Exception as exc:  # noqa: BLE001 servers down: try again next time
            reaped.append(f"{state['database']}: {exc!r}")
            continue
        path.unlink(missing_ok=True)
        reaped.append(state["database"])
    return reaped


def _admin_connection(postgres: str):
    import psycopg2

    conn = psycopg2.connect(f"{postgres.rstrip('/')}/postgres", connect_timeout=5)
    conn.autocommit = True
    return conn


def _drop_database(postgres: str, database: str) -> None:
    conn = _admin_connection(postgres)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        conn.close()


def _redis_keys(redis_url: str, prefix: str) -> list[bytes]:
    import redis

    return list(redis.Redis.from_url(redis_url, socket_timeout=5).scan_iter(match=f"{prefix}*", count=1000))


def _delete_redis_keys(redis_url: str, prefix: str) -> None:
    import redis

    keys = _redis_keys(redis_url, prefix)
    if keys:
        redis.Redis.from_url(redis_url, socket_timeout=5).delete(*keys)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    killed: list[tuple[int, float]] = field(default_factory=list)  # (PID, start time) of its tree, once stopped

    def alive(self) -> bool:
        return self.popen.poll() is None


class Cluster:
    """One Airflow installation with the CeleryExecutor, on a fresh PostgreSQL database and a Redis key prefix."""

    def __init__(self, workdir: Path, data_root: Path):
        self.workdir = workdir
        self.token_name = f"medcore_it_{secrets.token_hex(4)}"
        self.database = self.token_name
        self.redis_prefix = f"{self.token_name}:"
        self.state_file = STATE_DIR / f"{self.token_name}.json"
        self.home = workdir / "airflow_home"
        self.logs = workdir / "process-logs"
        self.runs_root = workdir / "runs"
        self.config = workdir / "integration.yaml"
        self.registry_root = workdir / "registry"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, Proc] = {}
        self.stopped: list[Proc] = []
        self.workers_started = 0
        self.workers: dict[str, str] = {}  # role -> process name of its current worker
        self.run_ids: list[str] = []
        self._token: str | None = None
        self._db_created = False
        self.logs.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"extends: {ROOT / 'conditions.yaml'}\ndata_root: {data_root}\n"
            f"runs_root: {self.runs_root}\n" + textwrap.dedent(PROFILES)
        )
        pg = POSTGRES_URL.rstrip("/")
        # Name the driver: SQLAlchemy 2.1's default for postgresql:// is psycopg 3, which is not installed.
        pg_psycopg2 = pg.replace("postgresql://", "postgresql+psycopg2://", 1)
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MEDCORE_"))}
        self.env = {
            **keep,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{pg_psycopg2}/{self.database}",
            "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{pg_psycopg2}/{self.database}",
            # Every broker key of this cluster starts with the prefix, so cleaning up touches nothing else.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.redis_prefix,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            # Only the runs the tests trigger: unpausing must not start tonight's full 10-model run.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # A dead worker's task is noticed after 30 s without a heartbeat (default 300 s) ...
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # ... and retried after 5-10 s (the DAG's 1 min base delay, shortened for the test).
            "MEDCORE_RETRY_DELAY_SECONDS": "5",
            "MEDCORE_CONFIG": str(self.config),
            "MEDCORE_DATA_ROOT": str(data_root),
            "MEDCORE_RUNS_ROOT": str(self.runs_root),
            "MEDCORE_REGISTRY_ROOT": str(self.registry_root),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 240) -> None:
        """Create the database, migrate it, make the pool, start every component and wait until all are up."""
        self._create_database()
        self.airflow("db", "migrate", timeout=300)
        self.airflow("pools", "set", "training", "2", "DenseNet training: one slot per core")
        deadline = time.monotonic() + timeout
        self.spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1")
        self.spawn("scheduler", "scheduler", "--skip-serve-logs")
        self.spawn("dag-processor", "dag-processor")
        for role in WORKERS:
            self.start_worker(role)
        self._wait(lambda: self._health_ok(), deadline, "api-server, scheduler and dag-processor healthy")
        self._wait(lambda: self._dag_parsed(), deadline, f"DAG {DAG_ID} parsed")
        for role in WORKERS:
            self.wait_worker_ready(deadline - time.monotonic(), role)
        response = self.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        assert response.status_code == 200, response.text

    def close(self) -> list[str]:
        """Stop every process (TERM, then KILL), drop the database, delete the Redis keys; return what went wrong."""
        problems = []
        for proc in list(self.procs.values()):
            try:
                self.stop(proc.name)
            except Exception as exc:  # noqa: BLE001 keep cleaning up
                problems.append(f"stop {proc.name}: {exc!r}")
        if self._db_created:
            try:
                self._drop_database()
            except Exception as exc:  # noqa: BLE001 best effort: one failure here must not stop the cleanup or the retry
                problems.append(f"drop database {self.database}: {exc!r}")
        try:
            _delete_redis_keys(REDIS_URL, self.redis_prefix)
        except Exception as exc:  # noqa: BLE001 best effort: one failure here must not stop the cleanup or the retry
            problems.append(f"delete redis keys {self.redis_prefix}*: {exc!r}")
        if not problems:
            self.state_file.unlink(missing_ok=True)
        return problems

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run one `airflow` command against this cluster; fail with its output if it fails."""
        done = subprocess.run(
            [str(AIRFLOW_LOCAL), "airflow", *args],
            env=self.env,
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                [str(AIRFLOW_LOCAL), "airflow", *args],
                env={**self.env, **(env or {})},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = Proc(name, popen, log)
        self._save_state()
        return self.procs[name]

    def stop(self, name: str, sig: int = signal.SIGTERM) -> Proc:
        proc = self.procs.pop(name)
        proc.killed = kill_tree(proc.popen.pid, sig)
        try:
            proc.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.killed += kill_tree(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(timeout=15)
        self.stopped.append(proc)
        return proc

    def start_worker(self, role: str = "training") -> Proc:
        """Start the Celery worker `role` (see WORKERS): its one queue, two processes, its own host name."""
        queue, hostname = WORKERS[role]
        self.workers_started += 1
        n = self.workers_started
        proc = self.spawn(
            f"worker-{role}-{n}",
            "celery",
            "worker",
            "--queues",
            queue,
            "--concurrency",
            "2",
            "--celery-hostname",
            f"{self.token_name}-{role}-{n}@%h",
            "--pid",
            str(self.workdir / f"worker-{role}-{n}.pid"),
            "--skip-serve-logs",
            "--without-mingle",
            "--without-gossip",
            env={
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.integration.hostnames.worker_hostname",
                "MEDCORE_IT_HOSTNAME": hostname,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), self.env.get("PYTHONPATH")])),
            },
        )
        self.workers[role] = proc.name
        return proc

    def worker(self, role: str = "training") -> Proc:
        return self.procs[self.workers[role]]

    def wait_worker_ready(self, timeout: float = 120, role: str = "training") -> None:
        worker = self.worker(role)
        self._wait(
            lambda: " ready." in worker.log.read_text(errors="replace"),
            time.monotonic() + timeout,
            f"{worker.name} ready",
        )

    def kill_worker(self, role: str = "training") -> Proc:
        """SIGKILL a Celery worker and everything it started, as a crashed machine would lose them."""
        return self.stop(self.worker(role).name, signal.SIGKILL)

    # ---------------------------------------------------------------- REST API v2

    def token(self, username: str = "admin") -> str:
        if username == "admin" and self._token:
            return self._token
        passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
        response = self.http("POST", "/auth/token", json={"username": username, "password": passwords[username]})
        assert response.status_code == 201, f"POST /auth/token: {response.status_code} {response.text}"
        token = response.json()["access_token"]
        if username == "admin":
            self._token = token
        return token

    def http(self, method: str, path: str, token: str | None = None, **kwargs: Any):
        import httpx

        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any):
        return self.http(method, path, token=self.token(), **kwargs)

    def trigger(self, conf: dict) -> str:
        response = self.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
        assert response.status_code == 200, f"trigger: {response.status_code} {response.text}"
        self.run_ids.append(response.json()["dag_run_id"])
        return self.run_ids[-1]

    def run(self, run_id: str) -> dict:
        response = self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_run(self, run_id: str, timeout: float = 480) -> dict:
        """Poll the run until it succeeds or fails; fail the test if it does neither in time."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["state"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['state']} after {timeout:.0f} s: {self.states(run_id)}")
            self._check_alive()
            time.sleep(2)

    def task_instances(self, run_id: str) -> list[dict]:
        response = self.api(
            "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances", params={"limit": 100}
        )
        assert response.status_code == 200, response.text
        return response.json()["task_instances"]

    def task_instance(self, run_id: str, task_id: str, map_index: int = -1) -> dict:
        for ti in self.task_instances(run_id):
            if ti["task_id"] == task_id and ti["map_index"] == map_index:
                return ti
        raise AssertionError(f"no task instance {task_id}[{map_index}] in {run_id}")

    def tries(self, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
        response = self.api(
            "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/{map_index}/tries"
        )
        assert response.status_code == 200, response.text
        return response.json()["task_instances"]

    def states(self, run_id: str) -> dict[str, str]:
        return {
            f"{ti['task_id']}[{ti['map_index']}]": f"{ti['state']} (try {ti['try_number']})"
            for ti in self.task_instances(run_id)
        }

    def timeline(self, run_id: str) -> str:
        """One line per task instance: state, try, queue, seconds from the run's start to queued, start and end."""
        import datetime as dt

        def at(value: str | None) -> dt.datetime | None:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None

        run = self.run(run_id)
        origin = at(run.get("start_date") or run.get("queued_at"))
        lines = [f"run {run_id}: {run['state']}, {run.get('start_date')} .. {run.get('end_date')}"]
        for ti in sorted(self.task_instances(run_id), key=lambda ti: ti.get("start_date") or "~"):
            marks = [
                (name, at(ti.get(key)))
                for name, key in (("queued", "queued_when"), ("start", "start_date"), ("end", "end_date"))
            ]
            shown = " ".join(
                f"{name}={(when - origin).total_seconds():.0f}s" for name, when in marks if when and origin
            )
            lines.append(
                f"  {ti['task_id']}[{ti['map_index']}] {ti['state']} try {ti['try_number']} "
                f"queue={ti.get('queue')} {shown}"
            )
        return "\n".join(lines)

    def clear(self, run_id: str, task_ids: list[str]) -> list[dict]:
        """Clear tasks of a finished run, with everything downstream of them, so they run again."""
        response = self.api(
            "POST",
            f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
            json={
                "dag_run_id": run_id,
                "task_ids": task_ids,
                "include_downstream": True,
                "only_failed": False,
                "dry_run": False,
                "reset_dag_runs": True,
            },
        )
        assert response.status_code == 200, f"clear: {response.status_code} {response.text}"
        return response.json()["task_instances"]

    def run_dir(self, run_id: str) -> Path:
        from medcore.layout import safe_run_id

        return self.runs_root / safe_run_id(run_id)

    # ---------------------------------------------------------------- diagnostics

    def diagnostics(self, lines: int = 40, limit: int = 24000) -> str:
        """The tail of every process log and of the task logs, for a failed test's report."""
        parts = []
        for run_id in self.run_ids:
            try:
                parts.append(self.timeline(run_id))
            except Exception as exc:  # noqa: BLE001 the API server may be what failed
                parts.append(f"run {run_id}: no timeline ({exc!r})")
        for proc in [*self.stopped, *self.procs.values()]:
            state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
            parts.append(f"==== {proc.name} ({state}) {proc.log}\n{_tail(proc.log, lines)}")
        task_logs = (
            sorted((self.home / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
            if (self.home / "logs").is_dir()
            else []
        )
        for log in task_logs[-8:]:
            parts.append(f"==== task log {log.relative_to(self.home)}\n{_tail(log, lines)}")
        text = "\n".join(parts)
        return text[-limit:]

    # ---------------------------------------------------------------- internals

    def _check_alive(self) -> None:
        dead = [f"{p.name} exited {p.popen.returncode}" for p in self.procs.values() if not p.alive()]
        if dead:
            raise AssertionError("Airflow component died: " + ", ".join(dead))

    def _wait(self, ready, deadline: float, what: str) -> None:
        while True:
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 best effort: one failure here must not stop the cleanup or the retry
                pass
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(1)

    def _health_ok(self) -> bool:
        health = self.http("GET", "/api/v2/monitor/health").json()
        return all(
            health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler", "dag_processor")
        )

    def _dag_parsed(self) -> bool:
        errors = self.api("GET", "/api/v2/importErrors").json()
        if errors.get("total_entries"):
            raise AssertionError(f"DAG import errors: {errors['import_errors']}")
        return self.api("GET", f"/api/v2/dags/{DAG_ID}").status_code == 200

    def _create_database(self) -> None:
        conn = _admin_connection(POSTGRES_URL)
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.database}"')
            self._db_created = True
            self._save_state()
        finally:
            conn.close()

    def _drop_database(self) -> None:
        _drop_database(POSTGRES_URL, self.database)
        self._db_created = False

    def _save_state(self) -> None:
        procs = [[p.popen.pid, _started(p.popen.pid)] for p in self.procs.values()]
        state = {
            "owner": os.getpid(),
            "owner_started": _started(os.getpid()),
            "postgres": POSTGRES_URL,
            "database": self.database,
            "redis": REDIS_URL,
            "redis_prefix": self.redis_prefix,
            "procs": procs,
        }
        STATE_DIR.mkdir(exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)

    def database_exists(self) -> bool:
        conn = _admin_connection(POSTGRES_URL)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                return cur.fetchone() is not None
        finally:
            conn.close()

    def query(self, sql: str, *args: Any) -> list[tuple]:
        """Read this cluster's metadata database directly (for what the REST API does not show)."""
        import psycopg2

        conn = psycopg2.connect(f"{POSTGRES_URL.rstrip('/')}/{self.database}", connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def redis_keys(self) -> list[bytes]:
        return _redis_keys(REDIS_URL, self.redis_prefix)

    def leftovers(self) -> list[str]:
        """What of this cluster still exists after close(): processes, database, Redis keys (should be nothing)."""
        found = [
            f"process {pid} of {proc.name}"
            for proc in self.stopped
            for pid, started in proc.killed
            if running(pid, started)
        ]
        found += [f"process {proc.popen.pid} of {proc.name}" for proc in self.procs.values() if proc.alive()]
        if self.database_exists():
            found.append(f"database {self.database}")
        found += [f"redis key {key!r}" for key in self.redis_keys()]
        return found


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc})"
