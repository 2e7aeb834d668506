"""What every benchmark records beside its figures, and how it drives a real embedded Airflow.

`scheduler_run` starts the embedded Airflow the way `make airflow-ui` does (SQLite, LocalExecutor,
the `training` pool with one slot per core) in a throw-away AIRFLOW_HOME: api-server, scheduler and
dag-processor on 127.0.0.1, each in its own session. It triggers one run of `medical_training`,
samples machine-wide CPU use from /proc/stat until the run ends, then stops every process it
started, by PID. Nothing is mocked: the tasks run through the same DAG users trigger.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
AIRFLOW_LOCAL = ROOT / "bin" / "airflow-local"
DAG_ID = "medical_training"


def data_root_or_none() -> Path | None:
    """The real sets ($MEDCORE_DATA_ROOT, default ../shared/datasets), or None when they are absent."""
    root = Path(os.environ.get("MEDCORE_DATA_ROOT") or ROOT.parent / "shared" / "datasets").resolve()
    return root if (root / "README.md").exists() and (root / "pneumonia").is_dir() else None


def real_sets_config(config_path: Path | str):
    """The real sets' root (exported as MEDCORE_DATA_ROOT for the runs to come) and the config loaded there.

    None when the sets are absent, so a benchmark can print NO_DATA and exit 0.
    """
    data_root = data_root_or_none()
    if data_root is None:
        return None
    os.environ["MEDCORE_DATA_ROOT"] = str(data_root)
    from medcore.config import load_config

    return data_root, load_config(config_path)


NO_DATA = "skipped: the real sets are not there (set MEDCORE_DATA_ROOT, default ../shared/datasets)"


def bench_workdir(name: str) -> tuple[Path, str]:
    """A fresh folder under runs/bench/ for one benchmark run, and the UTC stamp in its name."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return ROOT / "runs" / "bench" / f"{name}-{stamp}", stamp


def medcore_env(config: Path, data_root: Path, workdir: Path, registry: Path | None = None) -> dict[str, str]:
    """The environment that points a run at the config, the real sets, runs of its own and a registry
    (its own, unless `registry` names one an earlier run left champions in)."""
    return {
        "MEDCORE_CONFIG": str(Path(config).resolve()),
        "MEDCORE_DATA_ROOT": str(data_root),
        "MEDCORE_RUNS_ROOT": str(workdir / "runs"),
        "MEDCORE_REGISTRY_ROOT": str(registry or workdir / "registry"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def machine() -> dict[str, Any]:
    """CPU model, cores, the instruction-set flags that matter to TensorFlow, memory, OS, date."""
    cpu, flags, ids = platform.processor() or "unknown", [], {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and cpu in ("unknown", "x86_64", ""):
                cpu = value
            elif key == "flags" and not flags:
                flags = value.split()
            elif key in ("cpu family", "model", "stepping") and key not in ids:
                ids[key] = value
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
    mem_kb = 0
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        # The hypervisor names CPUs of different generations alike: "AMD EPYC" was a Zen 5 with AVX-512
        # BF16 on one machine and an AVX2-only family 23 on another. Family and model tell them apart.
        "cpu_id": " ".join(f"{k.split()[-1]} {v}" for k, v in ids.items()) or None,
        "cores": os.cpu_count(),
        "flags": [f for f in wanted if f in flags],
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in (
        "apache-airflow",
        "tensorflow-cpu",
        "keras",
        "numpy",
        "pandas",
        "scikit-learn",
        "opencv-python-headless",
    ):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """bench/results/<name>.json, written whole (temp file, then rename), tagged with machine and versions."""
    from medcore.jsonio import write_json

    path = RESULTS / f"{name}.json"
    write_json(path, {"benchmark": name, "machine": machine(), "versions": versions(), **payload})
    return path


class CpuSampler:
    """Machine-wide CPU busy fraction from /proc/stat since the sampler started, and the host's steal share.

    Busy counts steal (time the host gave this VM's vCPUs to someone else) as busy, as the VM saw it;
    `steal()` says how much of it that was, so a slow run on a busy host shows as such.
    """

    def __init__(self) -> None:
        self.first = self._read()

    @staticmethod
    def _read() -> tuple[int, int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle, fields[7] if len(fields) > 7 else 0

    @staticmethod
    def _busy(a: tuple[int, ...], b: tuple[int, ...]) -> float:
        total, idle = b[0] - a[0], b[1] - a[1]
        return 1.0 - idle / total if total else 0.0

    def busy(self) -> float:
        return self._busy(self.first, self._read())

    def steal(self) -> float:
        now = self._read()
        total = now[0] - self.first[0]
        return (now[2] - self.first[2]) / total if total else 0.0


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (not its children), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """End the process's whole session (its task children included): TERM, then KILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _query(db: Path, sql: str, *args: Any) -> list[tuple]:
    for _ in range(20):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
                return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:  # locked while Airflow writes, or the table not made yet
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"cannot read {db}: {last}")


def airflow_env(home: Path, medcore_env: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MEDCORE_"))}
    port = free_port()
    return {
        **keep,
        **medcore_env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        # Only the run triggered here: unpausing must not also start the scheduled nightly slot.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }


def airflow(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(AIRFLOW_LOCAL), "airflow", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode:
        raise RuntimeError(f"airflow {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def _start_services(env: dict[str, str], logs: Path, procs: list[subprocess.Popen]) -> None:
    """Start the API server, scheduler and DAG processor, each logging to its own file under `logs`."""
    for name, args in (
        (
            "api-server",
            ["api-server", "--host", "127.0.0.1", "--port", env["AIRFLOW__API__PORT"], "--workers", "1"],
        ),
        ("scheduler", ["scheduler"]),
        ("dag-processor", ["dag-processor"]),
    ):
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 the child process owns it until it exits
        procs.append(
            subprocess.Popen(
                [str(AIRFLOW_LOCAL), "airflow", *args],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )


def _wait_parsed(db: Path, procs: list[subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + 300
    while not _query(db, "select 1 from serialized_dag where dag_id = ?", DAG_ID):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{DAG_ID} was not parsed within 300 s; see {logs}")
        time.sleep(2)


def _wait_run(db: Path, procs: list[subprocess.Popen], logs: Path, run_id: str, started: float, timeout: float):
    """The DAG run's final state, or a timeout note; an error if a service dies meanwhile."""
    while True:
        rows = _query(db, "select state from dag_run where dag_id = ? and run_id = ?", DAG_ID, run_id)
        state = rows[0][0] if rows else None
        if state in ("success", "failed"):
            return state
        if time.monotonic() - started > timeout:
            return f"timed out after {timeout:.0f} s"
        dead = [p.args[2] for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited during the run; see {logs}")
        time.sleep(5)


def _run_record(db: Path, procs: list[subprocess.Popen], run_id: str, state, wall: float, cpu) -> dict[str, Any]:
    # Each Airflow service's own CPU (its main process; task processes are counted in the tasks' records).
    services = {p.args[2]: process_cpu_seconds(p.pid) for p in procs}
    tasks = _query(
        db,
        "select task_id, map_index, state, start_date, end_date, try_number from task_instance "
        "where dag_id = ? and run_id = ?",
        DAG_ID,
        run_id,
    )
    return {
        "run_id": run_id,
        "state": state,
        "wall_seconds": round(wall, 1),
        "cpu_busy": round(cpu.busy(), 3),
        "cpu_steal": round(cpu.steal(), 4),
        "service_cpu_seconds": services,
        "executor": "LocalExecutor",
        "database": "sqlite",
        "tasks": [dict(zip(("task_id", "map_index", "state", "start", "end", "tries"), t)) for t in tasks],
    }


def scheduler_run(
    workdir: Path, medcore_env: dict[str, str], conf: dict[str, Any], run_id: str, timeout: float = 4 * 3600
) -> dict[str, Any]:
    """Trigger one DAG run under a real scheduler (LocalExecutor, SQLite); wall time and CPU use of the run."""
    home = workdir / "airflow_home"
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = airflow_env(home, medcore_env)
    airflow(env, "db", "migrate")
    airflow(env, "pools", "set", "training", str(os.cpu_count() or 1), "DenseNet training: one slot per core")
    procs: list[subprocess.Popen] = []
    try:
        _start_services(env, logs, procs)
        db = home / "airflow.db"
        _wait_parsed(db, procs, logs)
        airflow(env, "dags", "unpause", DAG_ID)
        cpu = CpuSampler()
        started = time.monotonic()
        airflow(env, "dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(conf))
        state = _wait_run(db, procs, logs, run_id, started, timeout)
        wall = time.monotonic() - started
        return _run_record(db, procs, run_id, state, wall, cpu)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def model_rows(runs_root: Path, run_id: str) -> list[dict[str, Any]]:
    """Per (condition, profile): status, test figures with intervals, and training cost, from the run's own files."""
    from medcore.layout import RunLayout
    from medcore.report.render import gather_run

    context = gather_run(RunLayout(runs_root, run_id))
    decisions = (context.get("promotion") or {}).get("conditions") or {}
    rows = []
    for m in context["models"]:
        metrics, training = m["metrics"] or {}, m["training"] or {}
        decision = decisions.get(m["condition"]) or {}
        rows.append(
            {
                "condition": m["condition"],
                "profile": m["profile"],
                "status": m["status"],
                "failure": m["failure"],
                # A night with champions (bench/nightly.py --after): what the plan did and what promote decided.
                "mode": (m.get("nightly") or {}).get("mode"),
                "decision": decision.get("decision"),
                "decision_reason": decision.get("reason"),
                "test": {
                    k: metrics.get(k)
                    for k in ("n", "n_positive", "roc_auc", "accuracy", "recall", "specificity", "pr_auc", "threshold")
                },
                "intervals": metrics.get("intervals", {}),
                "bootstrap_unit": (metrics.get("bootstrap") or {}).get("unit"),
                "tier": (metrics.get("quality") or {}).get("tier"),
                # Issue 17: what the figures count (study, or images scored out of fold), kappa at the val
                # threshold, the per-image figures a study-level set keeps beside its own, and calibration.
                "unit": metrics.get("unit") or "image",
                "estimate": metrics.get("estimate") or training.get("estimate"),
                "kappa": metrics.get("kappa"),
                "image_level": {k: (metrics.get("image_level") or {}).get(k) for k in ("n", "roc_auc", "intervals")}
                if metrics.get("image_level")
                else None,
                "calibration": metrics.get("calibration"),
                "training": {
                    k: training.get(k)
                    for k in (
                        "image_size",
                        "epochs_run",
                        "epochs_planned",
                        "early_stopped",
                        "wall_seconds",
                        "images_per_second",
                        "peak_memory_mb",
                        "best_val_auc",
                        "train_images",
                        "threads",
                        "precision",
                        "seconds_to_first_step",
                        "learning_rate",
                    )
                },
            }
        )
    return rows


def ensemble_rows(runs_root: Path, run_id: str, seed: int = 1337) -> list[dict[str, Any]]:
    """Per condition with two or more succeeded profiles: test ROC AUC of their mean logit, with its interval.

    A lever that costs no training: the run already scored the same test images with every profile.
    Only ROC AUC is reported, since a threshold for the ensemble would need validation scores, which
    the run does not keep.
    """
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from medcore.assess.evaluation import bootstrap_intervals
    from medcore.layout import RunLayout

    run = RunLayout(runs_root, run_id)
    info = json.loads(run.run_json.read_text())
    by_condition: dict[str, list[str]] = {}
    for job in info["jobs"]:
        if run.model(job["condition"], job["profile"]).gradcam_json.exists():
            by_condition.setdefault(job["condition"], []).append(job["profile"])
    rows = []
    for condition, profiles in by_condition.items():
        if len(profiles) < 2:
            continue
        frames = [
            pd.read_csv(run.model(condition, p).predictions_csv)[["relpath", "label", "group", "probability"]].rename(
                columns={"probability": p}
            )
            for p in profiles
        ]
        merged = frames[0]
        for frame in frames[1:]:
            merged = merged.merge(frame.drop(columns=["label", "group"]), on="relpath")
        p = np.clip(merged[profiles].to_numpy(dtype=float), 1e-7, 1 - 1e-7)
        score = 1 / (1 + np.exp(-np.log(p / (1 - p)).mean(axis=1)))
        labels = merged["label"].to_numpy(dtype=int)
        interval = bootstrap_intervals(labels, score, 0.5, groups=merged["group"].astype(str).tolist(), seed=seed)[
            "intervals"
        ]["roc_auc"]
        rows.append(
            {
                "condition": condition,
                "profiles": profiles,
                "n": len(merged),
                "roc_auc": float(roc_auc_score(labels, score)),
                "interval": interval,
                "members": {prof: float(roc_auc_score(labels, merged[prof])) for prof in profiles},
            }
        )
    return rows
