"""Starting and stopping real Airflow processes for tests: free 127.0.0.1 ports, own process groups, stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT

AIRFLOW = str(ROOT / "bin" / "airflow-local")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def airflow(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """One Airflow CLI command through bin/airflow-local; fails the test with its stderr if it fails."""
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr[-3000:]}"
    return done


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A long-running Airflow component in its own session (so stop() reaches its children), output to `log`."""
    with log.open("w") as out:
        return subprocess.Popen(
            [AIRFLOW, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group we started (by its PID), then SIGKILL to whatever of it is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 1.0,
    alive: tuple[subprocess.Popen, ...] = (),
) -> object:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` seconds or as soon
    as one of the `alive` processes exits."""
    deadline = time.monotonic() + timeout
    while True:
        for process in alive:
            assert process.poll() is None, f"{process.args[1:3]} exited ({process.returncode}) while waiting for {what}"
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(interval)
