"""Fuzzing the registry and the run folder: promotions killed at any write, runs of one id started at once
(issue 39). After a restart the record, the trend and the report agree, with no temporary files."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcore.errors import StageError
from medcore.layout import RegistryLayout, RunLayout
from tests.fakes import metrics_with, paired, write_config, write_run
from tests.fuzzing import EXAMPLES, FUZZ, count
from tests.nights.test_registry import _agree, _kill_at_write, _Killed, _promote

# A case here promotes several nights or runs a model: a quarter of the cases, still > 50 under `make fuzz`.
LIGHTER = settings(FUZZ, max_examples=max(10, EXAMPLES // 4))


@LIGHTER
@given(
    nights=st.lists(st.floats(0.55, 0.95), min_size=2, max_size=4),
    killed=st.integers(0, 3),
    at=st.integers(1, 12),
    retry=st.booleans(),
)
def test_a_promotion_killed_at_any_write_of_any_night_is_repaired(nights, killed, at, retry):
    """Nights of random ROC AUC, one killed at its `at`-th registry write; the next promote (a retry of that night
    or the following night) leaves record, trend and promotion.json agreeing and no .tmp behind."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
        root = Path(tmp)
        config, runs = write_config(root), root / "runs"
        registry = RegistryLayout(root / "registry")
        champion, last = None, None
        for night, auc in enumerate(nights):
            versus = paired(champion, auc, 0.80) if champion else None
            last = write_run(
                runs,
                f"n{night}",
                {("knee", "standard"): {"metrics": metrics_with(auc, versus=versus), "seed": night}},
                config,
                started=f"2026-11-{night + 10:02d}T01:00:00+00:00",
            )
            if night == killed % len(nights):
                with pytest.MonkeyPatch.context() as dying:
                    _kill_at_write(dying, registry.root, at)
                    try:
                        _promote(runs, last)
                    except _Killed:
                        pass
                if retry:
                    _promote(runs, last)
            else:
                _promote(runs, last)
            champion = champion or "n0/standard"
        if not retry:  # the restart is one more night
            last = write_run(
                runs,
                "after",
                {("knee", "standard"): {"metrics": metrics_with(0.6), "seed": 9}},
                config,
                started="2026-11-30T01:00:00+00:00",
            )
            _promote(runs, last)
        if registry.record("knee").exists() and _has_champion(registry):
            _agree(registry, runs, "knee", last)
        assert not list(registry.root.rglob("*.tmp")) if registry.root.exists() else True
    count("registry crashes")


def _has_champion(registry: RegistryLayout) -> bool:
    from medcore.jsonio import read_json

    return bool(read_json(registry.record("knee")).get("champion"))


@FUZZ
@given(ids=st.lists(st.sampled_from(["a", "b", "c", "night-1"]), min_size=2, max_size=6))
def test_runs_started_at_once_hold_their_folder_alone(ids):
    """Threads start runs with these ids at the same moment: per id exactly one holds the folder and every other
    gets a one-line 'already running' refusal."""
    from medcore.pipeline import run_lock

    with tempfile.TemporaryDirectory() as tmp:
        start, held = threading.Barrier(len(ids)), threading.Barrier(len(ids))
        outcomes: list[tuple[str, str]] = []

        def attempt(run_id: str) -> None:
            start.wait()
            try:
                with run_lock(RunLayout(Path(tmp), run_id)):
                    outcomes.append((run_id, "held"))
                    held.wait()  # every attempt is made while the winners still hold their folders
                    return
            except StageError as exc:
                assert "already running" in str(exc) and "\n" not in str(exc)
                outcomes.append((run_id, "refused"))
            held.wait()

        threads = [threading.Thread(target=attempt, args=(i,)) for i in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for run_id in set(ids):
            mine = [o for i, o in outcomes if i == run_id]
            assert mine.count("held") == 1 and len(mine) == ids.count(run_id), (run_id, outcomes)
        shutil.rmtree(tmp, ignore_errors=True)
    count("concurrent runs")
