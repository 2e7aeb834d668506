"""A run's progress for a terminal: which model and stage is running, how many are done, what is left.

Read from what the run leaves behind (run.json's plan, each model's artefacts and failure.json) and,
under the embedded Airflow, from its metadata database (which task instance is running). Nothing here
imports Airflow or TensorFlow: `medcore watch` runs beside `airflow dags test` and must start at once.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from medcore.jsonio import check_output_file, file_mode, read_json
from medcore.layout import ModelLayout, RunLayout, is_run_folder_name

__all__ = [
    "ModelProgress",
    "RunProgress",
    "read_progress",
    "progress_line",
    "running_tasks",
    "watch",
    "eta_text",
    "final_words",
]

STAGES = ("validate", "train", "evaluate", "gradcam")
WATCH_LOG_HEADER = "# medcore watch: the watched command's output follows"
# Share of a demo chain's time each stage takes: the estimate weighs by it. Measured on `make demo` (128 px, one
# task per core; timings.json summed over the ten models, 2026-12-07). Validate is nearly free: weighed more, its
# ten quick finishes at the start made the first estimates two to three times too long.
STAGE_WEIGHTS = {"validate": 0.005, "train": 0.58, "evaluate": 0.135, "gradcam": 0.28}


@dataclass(frozen=True)
class ModelProgress:
    """One planned model: the stages it finished, and the stage and error if it failed."""

    condition: str
    profile: str
    finished: tuple[str, ...]
    failed_at: str | None = None
    error: str | None = None
    epochs_done: int = 0

    @property
    def name(self) -> str:
        return f"{self.condition}/{self.profile}"

    @property
    def done(self) -> bool:
        return self.failed_at is not None or len(self.finished) == len(STAGES)

    @property
    def share_done(self) -> float:
        """The weighted share of this model's work that is behind it (1 once failed: nothing more runs)."""
        if self.done:
            return 1.0
        return sum(STAGE_WEIGHTS[s] for s in self.finished)


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    models: tuple[ModelProgress, ...]
    reported: bool

    @property
    def finished(self) -> int:
        return sum(m.done for m in self.models)

    @property
    def failed(self) -> tuple[ModelProgress, ...]:
        return tuple(m for m in self.models if m.failed_at)

    @property
    def share_done(self) -> float:
        return sum(m.share_done for m in self.models) / len(self.models) if self.models else 0.0


def _finished_stages(paths: ModelLayout) -> tuple[str, ...]:
    marks = {
        "validate": paths.split_csv,
        "train": paths.model,
        "evaluate": paths.metrics_json,
        "gradcam": paths.gradcam_json,
    }
    return tuple(stage for stage in STAGES if marks[stage].exists())


def _history_rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except OSError:
        return 0


def read_progress(run: RunLayout) -> RunProgress | None:
    """The progress of the run in `run` (None until its plan, run.json, is written)."""
    try:
        info = read_json(run.run_json)
    except (OSError, ValueError):
        return None
    models = []
    for job in info.get("jobs", []):
        paths = run.model(job["condition"], job["profile"])
        failure = None
        if paths.failure_json.exists():
            try:
                failure = read_json(paths.failure_json)
            except (OSError, ValueError):
                failure = None
        models.append(
            ModelProgress(
                job["condition"],
                job["profile"],
                _finished_stages(paths),
                failed_at=(failure or {}).get("stage"),
                error=(failure or {}).get("error"),
                epochs_done=_history_rows(paths.history_csv),
            )
        )
    return RunProgress(str(info.get("run_id", run.root.name)), tuple(models), run.summary_json.exists())


def running_tasks(db: Path, run_id: str, jobs: list[dict]) -> list[str]:
    """`condition/profile stage` for each task instance Airflow's SQLite database holds as running (read-only)."""
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            rows = connection.execute(
                "SELECT task_id, map_index FROM task_instance WHERE run_id = ? AND state = 'running'", (run_id,)
            ).fetchall()
    except sqlite3.Error:
        return []  # locked or migrating: the next poll reads it
    shown = []
    for task_id, map_index in rows:
        group, _, stage = task_id.rpartition(".")
        if group == "model_chain" and 0 <= map_index < len(jobs):
            job = jobs[map_index]
            shown.append(f"{job['condition']}/{job['profile']} {stage}")
        else:
            shown.append(task_id if map_index < 0 else f"{task_id}[{map_index}]")
    return sorted(shown)


def eta_text(elapsed: float, share_done: float) -> str:
    """'about 3 min left' from the time so far and the share of the work done ("estimating" before 4 %)."""
    if share_done < 0.04:
        return "estimating time left"
    left = elapsed * (1 - share_done) / share_done
    return f"about {left / 60:.0f} min left" if left >= 90 else f"about {max(5, round(left / 5) * 5):.0f} s left"


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60:d}:{int(seconds) % 60:02d}"


def progress_line(progress: RunProgress, elapsed: float, running: Sequence[str] = ()) -> str:
    """One terminal line: elapsed time, models done of planned, what is running, the estimate."""
    total = len(progress.models)
    failed = f", {len(progress.failed)} failed" if progress.failed else ""
    if running:
        now = "running " + ", ".join(running)
    else:
        active = [m for m in progress.models if not m.done and m.finished]
        now = "next " + ", ".join(f"{m.name} {STAGES[len(m.finished)]}" for m in active[:2]) if active else ""
    if progress.finished == total and total:
        now, estimate = "promote, report and notify", "nearly done"
    else:
        estimate = eta_text(elapsed, progress.share_done)
    parts = [f"[{_clock(elapsed)}] {progress.finished}/{total} models done{failed}", now, estimate]
    return " · ".join(p for p in parts if p)


def _what(line: str) -> str:
    """A progress line without its clock and estimate: a new line is printed when this changes."""
    return line.split("] ", 1)[-1].rsplit(" · ", 1)[0]


def _newest_run(runs_root: Path, since: float) -> RunLayout | None:
    """The run whose plan was written last, at or after `since` (epoch seconds)."""
    best, best_time = None, since
    try:
        folders = [p for p in runs_root.iterdir() if p.is_dir() and is_run_folder_name(p.name)]
    except OSError:
        return None
    for folder in folders:
        try:
            written = (folder / "run.json").stat().st_mtime
        except OSError:
            continue
        if written >= best_time:
            best, best_time = folder, written
    if best is None:
        return None
    try:  # the folder name is safe_run_id(run id); RunLayout wants the id itself
        return RunLayout(runs_root, str(read_json(best / "run.json")["run_id"]))
    except (OSError, ValueError, KeyError):
        return None


def _why_it_failed(log: Path) -> str | None:
    """The last line of the log that says what went wrong (an ERROR record or an exception)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if " ERROR " in line or "[error" in line or line.split(":", 1)[0].endswith(("Error", "Exception")):
            return line.strip()[:300]
    return None


def watch(
    command: list[str],
    log: Path,
    runs_root: Path,
    airflow_db: Path | None = None,
    interval: float = 5.0,
    heartbeat: float = 20.0,
    out: TextIO = sys.stdout,
) -> int:
    """Run `command` with its output in `log`, print its run's progress, return its exit status.

    A line at once, then on every change and at least every `heartbeat` seconds; a failed model's one
    line as soon as its failure.json appears; on failure, why and where the log is.
    """
    start = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    # Never truncate what is not ours: absent, or a log this command wrote before (its first line says so);
    # O_NOFOLLOW closes the gap between that check and the open for a symlink planted in between.
    check_output_file(log, WATCH_LOG_HEADER)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, file_mode())
    shown = " ".join([Path(command[0]).name, *command[1:4]]).replace("\n", " ")[:80]
    print(f"[0:00] started: {shown} (log: {log})", file=out, flush=True)
    with os.fdopen(fd, "wb") as sink:
        sink.write(f"{WATCH_LOG_HEADER}\n".encode())
        sink.flush()
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _follow(child, log, runs_root, airflow_db, start, interval, heartbeat, out)
        except KeyboardInterrupt:
            child.terminate()
            child.wait()
            raise
    for line in final_words(runs_root, log, child.returncode, start - 1):
        print(line, file=out, flush=True)
    return child.returncode


def _follow(child, log, runs_root, airflow_db, start, interval, heartbeat, out) -> None:
    run: RunLayout | None = None
    last_line, last_print, told = "", time.time(), set()
    while child.poll() is None:
        try:
            child.wait(timeout=interval)
        except subprocess.TimeoutExpired:
            pass
        run = run or _newest_run(runs_root, start - 1)
        progress = read_progress(run) if run else None
        elapsed = time.time() - start
        if progress is None:
            line = f"[{_clock(elapsed)}] starting: Airflow parses the DAG and plans the run"
        else:
            for model in progress.failed:
                if model.name not in told:
                    told.add(model.name)
                    print(
                        f"✗ {model.name} failed at {model.failed_at}: {model.error} (log: {log})", file=out, flush=True
                    )
            jobs = read_json(run.run_json).get("jobs", []) if airflow_db and run is not None else []
            running = running_tasks(airflow_db, progress.run_id, jobs) if airflow_db else []
            line = progress_line(progress, elapsed, running)
        if _what(line) != _what(last_line) or time.time() - last_print >= heartbeat:
            print(line, file=out, flush=True)
            last_line, last_print = line, time.time()


def final_words(runs_root: Path, log: Path, returncode: int, since: float) -> list[str]:
    """What to print once the run process ended: the failure's one line and the log, when it failed."""
    if returncode == 0:
        return []
    run = _newest_run(runs_root, since)
    if run is not None and run.summary_json.exists():
        return [f"the run failed; see its report below, or the log: {log}"]
    why = _why_it_failed(log) or f"exit status {returncode}"
    return [f"failed: {why}", f"log: {log}"]
