"""The suite's shared trained fixtures rely on `--dist loadgroup` keeping an `xdist_group` on one worker.

pytest 9.2 with pytest-xdist 3.8 silently dropped that (pytest-dev/pytest-xdist#1386): `night_one` then
trained once per worker. This runs a four-test group under two workers and asks where each test ran.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_an_xdist_group_runs_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(
        textwrap.dedent(
            """
            import os
            import pytest

            @pytest.mark.xdist_group("shared")
            @pytest.mark.parametrize("i", range(4))
            def test_member(i, tmp_path_factory):
                worker = os.environ.get("PYTEST_XDIST_WORKER", "none")
                (tmp_path_factory.getbasetemp().parent.parent / f"ran-{i}-{worker}").touch()
            """
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'base'}",
            str(tmp_path / "test_grouped.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    workers = {p.name.split("-")[-1] for p in tmp_path.glob("ran-*")}
    assert len(list(tmp_path.glob("ran-*"))) == 4
    assert len(workers) == 1, f"one group ran on workers {sorted(workers)}"
