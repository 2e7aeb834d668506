"""Orchestration overhead: the same training work as one DAG run under the scheduler and as `medcore run`.

Usage: .venv/bin/python bench/overhead.py [--condition limb_abnormalities --condition cardiomegaly]
       [--profile standard] [--epochs 2]

Both runs use conditions.yaml, the real sets, the same (condition, profile) jobs, epochs and seed,
each with an empty registry of its own. `medcore run` does everything in one process, one model after
the other, with TensorFlow using every core; the DAG run goes through the embedded Airflow
(LocalExecutor, SQLite, the `training` pool) exactly as the nightly schedule does, so each stage is a
task process of its own and two models may train at once. Wall time is from start (or trigger) to the
end of the report. The ratio DAG / `medcore run` is written to bench/results/overhead.json and printed
last as `ratio=<value>`. Skips (exit 0) when the real sets are absent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    NO_DATA,
    ROOT,
    CpuSampler,
    bench_workdir,
    data_root_or_none,
    medcore_env,
    scheduler_run,
    write_result,
)


def _medcore_run(
    workdir: Path, env: dict[str, str], conditions: list[str], profiles: list[str], epochs: int, run_id: str
) -> dict:
    command = [str(ROOT / ".venv" / "bin" / "medcore"), "run", "--run-id", run_id, "--epochs", str(epochs)]
    for c in conditions:
        command += ["--condition", c]
    for p in profiles:
        command += ["--profile", p]
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MEDCORE_"))}
    cpu = CpuSampler()
    started = time.monotonic()
    with open(workdir / "medcore-run.log", "wb") as log:
        code = subprocess.run(command, env={**keep, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    return {
        "run_id": run_id,
        "exit_code": code,
        "wall_seconds": round(time.monotonic() - started, 1),
        "cpu_busy": round(cpu.busy(), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--condition", action="append", default=None)
    parser.add_argument("--profile", action="append", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    conditions = args.condition or ["limb_abnormalities", "cardiomegaly"]
    profiles = args.profile or ["standard"]
    data_root = data_root_or_none()
    if data_root is None:
        print(NO_DATA)
        return 0
    workdir, stamp = bench_workdir("overhead")
    modes = {}
    for mode in ("medcore_run", "scheduler"):
        here = workdir / mode
        here.mkdir(parents=True, exist_ok=True)
        env = medcore_env(ROOT / "conditions.yaml", data_root, here)
        run_id = f"bench_overhead_{mode}_{stamp}"
        print(f"{mode}: {len(conditions) * len(profiles)} models, {args.epochs} epochs ...", flush=True)
        if mode == "medcore_run":
            modes[mode] = _medcore_run(here, env, conditions, profiles, args.epochs, run_id)
        else:
            conf = {"conditions": conditions, "profiles": profiles, "epochs": args.epochs}
            run = scheduler_run(here, env, conf, run_id)
            modes[mode] = {k: run[k] for k in ("run_id", "state", "wall_seconds", "cpu_busy", "tasks")}
            shutil.rmtree(here / "airflow_home", ignore_errors=True)
        print(f"  {modes[mode]['wall_seconds']:.0f} s, CPU busy {modes[mode]['cpu_busy']:.0%}", flush=True)
    ratio = modes["scheduler"]["wall_seconds"] / modes["medcore_run"]["wall_seconds"]
    workload = (
        f"{', '.join(conditions)} × {', '.join(profiles)} from conditions.yaml on the real sets, "
        f"{args.epochs} epochs each"
    )
    path = write_result("overhead", {"workload": workload, "modes": modes, "ratio": ratio})
    print(f"raw figures: {path}")
    print(f"ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
