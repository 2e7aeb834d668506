"""The champion registry: one decision per condition per run, made on gates and same-split ROC AUC."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from medcore import pipeline
from medcore.config import RegistrySettings, load_config
from medcore.errors import ConfigError
from medcore.jsonio import read_json
from medcore.layout import RegistryLayout
from medcore.nights.registry import KEPT, NO_CHAMPION, PROMOTED, decide, next_best
from medcore.nights.registry import test_split_fingerprint as fingerprint  # not collected as a test
from tests.fakes import metrics_with, paired, write_config, write_run

SETTINGS = RegistrySettings(gates=(("roc_auc", 0.70), ("recall", 0.50)), margin=0.02)


def _versus(challenger: float, champion: float, half: float = 0.01, against: str = "old/standard") -> dict:
    delta = challenger - champion
    return {
        "champion": against,
        "selection": {
            "n": 40,
            "unit": "patient",
            "challenger_auc": challenger,
            "champion_auc": champion,
            "delta": delta,
            "low": delta - half,
            "high": delta + half,
            "confidence": 0.95,
            "champion_interval": [champion - 0.05, champion + 0.05],
        },
    }


def _candidate(auc: float | None = 0.85, recall: float = 0.6, versus: dict | None = None) -> dict:
    figures = {"roc_auc": auc, "recall": recall, "intervals": {"roc_auc": {"low": 0.7, "high": 0.9}}}
    return {
        "condition": "pneumonia",
        "profile": "standard",
        "selection": figures,
        "metrics": {"roc_auc": 0.5, "recall": 0.1},  # test figures: never read by the decision
        "versus_champion": versus,
    }


def _champion(auc: float = 0.80) -> dict:
    return {"run_id": "old", "profile": "standard", "metrics": {"roc_auc": auc}}


@pytest.mark.parametrize(
    ("candidate", "champion", "best", "decision", "words"),
    [
        (None, None, None, NO_CHAMPION, "no champion yet, and no model of this run succeeded"),
        (None, _champion(), None, KEPT, "no model of this run succeeded; the champion stays"),
        (
            _candidate(recall=0.4),
            None,
            None,
            NO_CHAMPION,
            "fails the gates on the selection split: recall 0.400 < 0.50",
        ),
        (
            _candidate(auc=0.65),
            _champion(0.5),
            None,
            KEPT,
            "fails the gates on the selection split: roc_auc 0.650 < 0.70",
        ),
        (_candidate(auc=None), None, None, NO_CHAMPION, "roc_auc n/a < 0.70"),
        (_candidate(), None, None, PROMOTED, "first champion"),
        (_candidate(0.85, versus=_versus(0.85, 0.80)), _champion(), None, PROMOTED, "(+0.050, 95% paired interval"),
        (_candidate(0.79, versus=_versus(0.79, 0.80, half=0.0099)), _champion(), None, PROMOTED, "margin 0.020"),
        (
            _candidate(0.79, versus=_versus(0.79, 0.80, half=0.0101)),
            _champion(),
            None,
            KEPT,
            "is not shown to be within the margin",
        ),
        (_candidate(0.80, versus=_versus(0.80, 0.80)), _champion(), 0.811, KEPT, "trails the best figure"),
        (_candidate(0.80, versus=_versus(0.80, 0.80)), _champion(), 0.809, PROMOTED, "by 0.009"),
        (
            _candidate(0.95, versus=_versus(0.95, 0.80, against="other/standard")),
            _champion(),
            None,
            KEPT,
            "was not compared with champion old/standard",
        ),
        (_candidate(0.95), _champion(), None, KEPT, "(its evaluation compared it with no champion)"),
        (
            _candidate(0.75, versus={"champion": "old/standard", "champion_missing": "gone.keras: no such file"}),
            _champion(0.95),
            None,
            PROMOTED,
            "could not be re-scored (gone.keras: no such file), so the gates alone",
        ),
    ],
)
def test_decision_table(candidate, champion, best, decision, words):
    """Every branch: gates on the selection split, then the paired lower bound against the best figure minus margin."""
    result = decide(candidate, champion, SETTINGS, best=best)
    assert result.decision == decision, result.reason
    assert words in result.reason, result.reason
    assert "0.500" not in result.reason and "0.100" not in result.reason, "test figures never decide"


def test_promotion_is_decided_before_any_file_is_touched():
    """`promotion` is pure: tonight's decision, its record and its trend row, from the registry record as data."""
    from medcore.nights.decision import Tonight, promotion

    candidate = {**_candidate(), "run_id": "new"}
    empty = {"condition": "pneumonia", "champion": None, "history": []}
    outcome = promotion(empty, Tonight([candidate]), "pneumonia", "new", SETTINGS, "2026-01-01T00:00:00Z")
    assert outcome.decision.decision == PROMOTED and outcome.record["decision"] == PROMOTED
    assert outcome.record["reason"] == outcome.decision.reason and "first champion" in outcome.decision.reason
    assert outcome.trend_row["decision"] == PROMOTED and outcome.trend_row["run_id"] == "new"
    assert empty == {"condition": "pneumonia", "champion": None, "history": []}, "the record is not changed"


def _nights(deltas: list[float], half: float = 0.004, start: float = 0.90, margin: float = 0.02) -> list[dict]:
    """Run `decide` and `next_best` night after night on unchanged selection images, as promote does."""
    settings = RegistrySettings(gates=(), margin=margin)
    champion_auc, best, nights = start, None, []
    for i, delta in enumerate(deltas):
        challenger = champion_auc + delta
        candidate = _candidate(challenger, versus=_versus(challenger, champion_auc, half, against=f"n{i}/standard"))
        champion = {"run_id": f"n{i}", "profile": "standard", "metrics": {}}
        result = decide(candidate, champion, settings, best=(best or {}).get("roc_auc"))
        best = next_best(best, "val-images", champion_auc, result.decision, challenger)
        nights.append({"decision": result.decision, "champion_before": champion_auc, "best": best["roc_auc"]})
        if result.decision == PROMOTED:
            champion_auc = challenger
    return nights


@pytest.mark.parametrize("half", [0.0, 0.004])
def test_thirty_nights_each_slightly_worse_cannot_add_up(half):
    """Thirty nights, each challenger 0.009 worse than the champion: promotions stop once the margin is used up,
    and the champion never ends more than the margin below the best figure on these images."""
    nights = _nights([-0.009] * 30, half=half)
    promoted = [i for i, n in enumerate(nights) if n["decision"] == PROMOTED]
    assert promoted == ([0, 1] if half == 0.0 else [0]), promoted  # 0.018 (or 0.009) of the 0.020 margin used
    assert all(n["decision"] == KEPT for n in nights[promoted[-1] + 1 :])
    final = nights[-1]["champion_before"]
    assert 0.90 - final <= 0.02 + 1e-9 and nights[-1]["best"] == pytest.approx(0.90)
    old_rule = 0.90 - 0.009 * 30  # a per-night tolerance of 0.01 would have let every one through
    assert final > old_rule + 0.2


def test_a_better_night_restores_the_margin():
    """After the margin is used up, a clearly better challenger is promoted and raises the best figure."""
    nights = _nights([-0.009, -0.009, -0.009, +0.05, -0.009], half=0.0)
    assert [n["decision"] for n in nights] == [PROMOTED, PROMOTED, KEPT, PROMOTED, PROMOTED]
    assert nights[3]["best"] == pytest.approx(0.90 - 0.018 + 0.05)


def test_next_best_starts_afresh_on_new_selection_images():
    """The best figure belongs to one set of selection images; new images start from tonight's champion figure."""
    best = next_best(None, "a", 0.80, KEPT, 0.85)
    assert best == {"fingerprint": "a", "roc_auc": 0.80}
    assert next_best(best, "a", 0.78, PROMOTED, 0.79)["roc_auc"] == 0.80
    assert next_best(best, "b", 0.70, KEPT, 0.72) == {"fingerprint": "b", "roc_auc": 0.70}
    assert next_best(best, None, 0.70, KEPT, None) == best


def test_quality_tier_gate():
    """With `min_tier`, a candidate below that tier (e.g. too few test patients) cannot be promoted."""
    import dataclasses

    strict = dataclasses.replace(SETTINGS, min_tier="moderate")
    weak = _candidate()
    weak["selection"]["quality_tier"] = "insufficient"
    result = decide(weak, None, strict)
    assert result.decision == NO_CHAMPION and "tier insufficient below moderate" in result.reason
    good = _candidate()
    good["selection"]["quality_tier"] = "good"
    assert decide(good, None, strict).decision == PROMOTED
    assert decide(weak, None, SETTINGS).decision == PROMOTED, "no tier gate unless configured"


def test_split_fingerprint_is_the_test_rows_only(tmp_path):
    """Row order and train rows do not matter; one test file or label more or changed does."""

    def write(name: str, rows: list[str]) -> str | None:
        path = tmp_path / name
        path.write_text("relpath,label,split\n" + "\n".join(rows) + "\n")
        return fingerprint(path)

    base = write("a.csv", ["t/1.png,1,test", "t/2.png,0,test", "x/9.png,1,train"])
    assert base and base == write("b.csv", ["x/8.png,0,train", "t/2.png,0.0,test", "t/1.png,1,test"])
    assert base != write("c.csv", ["t/1.png,0,test", "t/2.png,0,test"])
    assert base != write("d.csv", ["t/1.png,1,test", "t/2.png,0,test", "t/3.png,0,test"])
    assert write("e.csv", ["x/1.png,1,train"]) is None
    assert fingerprint(tmp_path / "missing.csv") is None


def _promote(runs, run) -> dict:
    pipeline.promote(run.run_id, runs)
    return read_json(run.promotion_json)["conditions"]


def test_champion_lifecycle(tmp_path, monkeypatch):
    """First good run promotes (model copied in), a worse one is kept out, a failed one changes nothing,
    a retry repeats the decision, and deleting old runs never breaks the champion."""
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
    config, runs = write_config(tmp_path), tmp_path / "runs"
    registry = RegistryLayout(tmp_path / "registry")

    first = write_run(
        runs,
        "run1",
        {
            ("pneumonia", "standard"): {"metrics": metrics_with(0.80), "seed": 1},
            ("pneumonia", "intensive"): {"metrics": metrics_with(0.86), "seed": 2},
        },
        config,
    )
    decision = _promote(runs, first)["pneumonia"]
    assert decision["decision"] == PROMOTED and "first champion" in decision["reason"]
    record = read_json(registry.record("pneumonia"))
    champion = record["champion"]
    assert (champion["run_id"], champion["profile"]) == ("run1", "intensive"), "the run's best profile is the candidate"
    assert champion["metrics"]["roc_auc"] == 0.86
    assert champion["metrics"]["intervals"]["roc_auc"] == metrics_with(0.86)["intervals"]["roc_auc"]
    assert champion["test_split_fingerprint"] == fingerprint(first.model("pneumonia", "intensive").split_csv)
    assert champion["dataset_fingerprint"] == "data0002"
    source = first.model("pneumonia", "intensive").model
    copied = tmp_path / "registry" / "pneumonia" / "run1__intensive.keras"
    assert champion["model_path"] == str(copied) and copied.read_bytes() == source.read_bytes()
    assert len(record["history"]) == 1

    second = write_run(
        runs,
        "run2",
        {
            ("pneumonia", "standard"): {
                "metrics": metrics_with(0.84, versus=paired("run1/intensive", 0.84, 0.86)),
                "seed": 3,
            }
        },
        config,
        started="2026-11-28T01:00:00+00:00",
    )
    decision = _promote(runs, second)["pneumonia"]
    assert decision["decision"] == KEPT and "is not shown to be within the margin" in decision["reason"]
    assert decision["delta_roc_auc"] == pytest.approx(0.84 - 0.86) and decision["gap_to_best_low"] == pytest.approx(
        -0.03
    )
    assert read_json(registry.record("pneumonia"))["champion"]["run_id"] == "run1"

    again = _promote(runs, second)["pneumonia"]
    assert again["decision"] == KEPT and again["redecided"] is True
    assert len(read_json(registry.record("pneumonia"))["history"]) == 2, "a rerun replaces its decision, never adds one"

    third = write_run(
        runs,
        "run3",
        {("pneumonia", "standard"): "train", ("pneumonia", "intensive"): "killed"},
        config,
        started="2026-11-29T01:00:00+00:00",
    )
    decision = _promote(runs, third)["pneumonia"]
    assert (
        decision["decision"] == KEPT
        and "no model of this run succeeded (standard, intensive failed)" in decision["reason"]
    )

    assert _promote(runs, first)["pneumonia"].get("repeated") is True, (
        "later runs decided since: run1's decision stands"
    )
    shutil.rmtree(first.root)  # old runs get deleted; the champion must survive that
    assert copied.is_file() and read_json(registry.record("pneumonia"))["champion"]["model_path"] == str(copied)

    fourth = write_run(
        runs,
        "run4",
        {
            ("pneumonia", "standard"): {
                "metrics": metrics_with(0.855, versus=paired("run1/intensive", 0.855, 0.86, half_width=0.005)),
                "seed": 4,
            }
        },
        config,
        started="2026-11-30T01:00:00+00:00",
    )
    decision = _promote(runs, fourth)["pneumonia"]
    assert decision["decision"] == PROMOTED and "(-0.005, 95% paired interval -0.010 to " in decision["reason"]
    assert decision["champion_before"]["run_id"] == "run1" and decision["champion"]["run_id"] == "run4"
    kept = sorted(p.name for p in (tmp_path / "registry" / "pneumonia").glob("*.keras"))
    assert kept == ["run1__intensive.keras", "run4__standard.keras"], "the new champion and the one it replaced"
    record = read_json(registry.record("pneumonia"))
    assert record["champion"]["split_path"] == str(tmp_path / "registry" / "pneumonia" / "run4__standard.split.csv")
    assert record["best"]["roc_auc"] == pytest.approx(0.86), "the best figure on these images is still run1's"
    assert record["test_split"]["nights"] == 3, "run1, run2, run4 reported on this test split (run3 evaluated nothing)"
    trend = (tmp_path / "registry" / "pneumonia.trend.csv").read_text().splitlines()
    assert len(trend) == 1 + 4 and trend[-1].split(",")[1:3] == ["run4", "promoted"]


def test_rerun_after_retrain_decides_again(tmp_path, monkeypatch):
    """Clearing a run's tasks retrains its model: promote then undoes its own decision and decides on the new files."""
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
    config, runs = write_config(tmp_path), tmp_path / "runs"
    registry = RegistryLayout(tmp_path / "registry")
    base = write_run(runs, "base", {("knee", "standard"): {"metrics": metrics_with(0.80), "seed": 1}}, config)
    _promote(runs, base)
    run = write_run(
        runs,
        "run",
        {("knee", "standard"): {"metrics": metrics_with(0.90, versus=paired("base/standard", 0.90, 0.80)), "seed": 2}},
        config,
        started="2026-11-28T01:00:00+00:00",
    )
    assert _promote(runs, run)["knee"]["decision"] == PROMOTED
    copy = tmp_path / "registry" / "knee" / "run__standard.keras"
    assert copy.read_bytes() == run.model("knee", "standard").model.read_bytes()

    write_run(
        runs,
        "run",
        {("knee", "standard"): {"metrics": metrics_with(0.85, versus=paired("base/standard", 0.85, 0.80)), "seed": 3}},
        config,
        started="2026-11-28T01:00:00+00:00",
    )  # the retrain: another model, another score
    decision = _promote(runs, run)["knee"]
    assert decision["decision"] == PROMOTED and decision["redecided"] is True
    assert decision["champion_before"]["run_id"] == "base", "compared with the champion its first decision saw"
    assert copy.read_bytes() == run.model("knee", "standard").model.read_bytes(), "the registry holds the new model"
    record = read_json(registry.record("knee"))
    assert [h["run_id"] for h in record["history"]] == ["run", "base"]
    assert record["champion"]["metrics"]["roc_auc"] == 0.85

    write_run(runs, "run", {("knee", "standard"): "train"}, config, started="2026-11-28T01:00:00+00:00")
    decision = _promote(runs, run)["knee"]
    assert decision["decision"] == KEPT and read_json(registry.record("knee"))["champion"]["run_id"] == "base"
    assert not copy.exists(), "an undone promotion leaves no copy behind"
    trend = (tmp_path / "registry" / "knee.trend.csv").read_text().splitlines()
    assert [line.split(",")[1:3] for line in trend[1:]] == [["base", "promoted"], ["run", "kept champion"]], (
        "a re-decided run replaces its trend row"
    )


def test_a_champion_is_only_beaten_on_the_same_images(tmp_path, monkeypatch):
    """A model compared with another champion (or none) is kept out however good its figures look; a champion whose
    model is gone is replaced on the gates, and the reason says so."""
    monkeypatch.setenv("MEDCORE_REGISTRY_ROOT", str(tmp_path / "elsewhere"))
    config, runs = write_config(tmp_path), tmp_path / "runs"
    first = write_run(runs, "a", {("limb", "standard"): {"metrics": metrics_with(0.75)}}, config)
    assert _promote(runs, first)["limb"]["decision"] == PROMOTED
    stale = write_run(
        runs,
        "b",
        {("limb", "standard"): {"metrics": metrics_with(0.95, versus=paired("z/standard", 0.95, 0.7))}},
        config,
        started="2026-11-28T01:00:00+00:00",
    )
    decision = _promote(runs, stale)["limb"]
    assert decision["decision"] == KEPT and "was not compared with champion a/standard" in decision["reason"]
    gone = {"champion": "a/standard", "champion_missing": "a__standard.keras: not a zip file"}
    rescue = write_run(
        runs,
        "c",
        {("limb", "standard"): {"metrics": metrics_with(0.72, versus=gone)}},
        config,
        started="2026-11-29T01:00:00+00:00",
    )
    decision = _promote(runs, rescue)["limb"]
    assert decision["decision"] == PROMOTED and "could not be re-scored" in decision["reason"]
    assert (tmp_path / "elsewhere" / "limb.json").is_file(), "MEDCORE_REGISTRY_ROOT overrides the config"


def test_gates_and_no_champion(tmp_path, monkeypatch):
    """A candidate below a gate never becomes the first champion; each condition gets its own decision."""
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
    config, runs = write_config(tmp_path, gates="{roc_auc_low: 0.70}"), tmp_path / "runs"
    run = write_run(
        runs,
        "r",
        {
            ("pneumonia", "standard"): {"metrics": metrics_with(0.80)},  # AUC low 0.608
            ("knee", "standard"): {"metrics": metrics_with(0.92)},  # AUC low 0.728
            ("cardiomegaly", "standard"): "validate",
        },
        config,
    )
    decisions = _promote(runs, run)
    assert (
        decisions["pneumonia"]["decision"] == NO_CHAMPION
        and "roc_auc_low 0.608 < 0.70" in decisions["pneumonia"]["reason"]
    )
    assert decisions["knee"]["decision"] == PROMOTED
    assert decisions["cardiomegaly"]["decision"] == NO_CHAMPION
    assert not (tmp_path / "registry" / "pneumonia").exists(), "nothing copied for a model that was not promoted"


def test_registry_config_errors_name_the_key(tmp_path):
    """Unknown gates and bad values are config errors naming the key; a null gate drops it."""
    with pytest.raises(ConfigError, match=r"registry\.gates\.auc: unknown key"):
        load_config(write_config(tmp_path, gates="{auc: 0.7}"))
    with pytest.raises(ConfigError, match=r"registry\.margin: must be between"):
        load_config(write_config(tmp_path, margin=2))
    with pytest.raises(ConfigError, match=r"notify\.recipients: must be a list of e-mail addresses"):
        load_config(write_config(tmp_path, extra="notify: {recipients: [nobody]}\n"))
    config = load_config(
        write_config(
            tmp_path,
            gates="{roc_auc: 0.8, recall: null}",
            extra="notify: {recipients: [a@example.org], conn_id: mail}\n",
        )
    )
    assert config.registry.gates == (("roc_auc", 0.8),)
    assert config.registry.root == tmp_path / "registry"
    assert config.notify.recipients == ("a@example.org",) and config.notify.conn_id == "mail"


def test_registry_lock_gives_up_after_its_timeout_naming_the_holder(tmp_path):
    """A promotion waiting on a stuck holder fails within its timeout with one line naming lock and holder."""
    import time

    from medcore.errors import StageError
    from medcore.nights.registry import _locked

    lock = tmp_path / "registry" / ".c.lock"
    with _locked(lock):
        start = time.monotonic()
        # flock is per open file, so a second open conflicts here too
        with pytest.raises(StageError) as caught, _locked(lock, timeout=0.3):
            pass
        waited = time.monotonic() - start
    message = str(caught.value)
    assert 0.3 <= waited < 5, waited
    assert str(lock) in message and "still held after" in message and f"pid {os.getpid()}" in message
    assert "\n" not in message
    with _locked(lock, timeout=0.3):  # released: the next one gets it at once
        pass


class _Killed(BaseException):
    """The process dying mid-promotion: not an Exception, so nothing on the way catches it."""


def _kill_at_write(monkeypatch, registry_root, at: int) -> list[str]:
    """Make the `at`-th write into the registry die half way: a partial temporary file, no rename, no clean-up."""
    import medcore.jsonio
    import medcore.nights.registry

    real, seen = medcore.jsonio.atomic_write_bytes, []

    def dying(path, data):
        if Path(path).resolve().is_relative_to(Path(registry_root).resolve()):
            seen.append(Path(path).name)
            if len(seen) == at:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                (Path(path).parent / f".{Path(path).name}.dead.tmp").write_bytes(data[: len(data) // 2])
                raise _Killed(path)
        return real(path, data)

    monkeypatch.setattr(medcore.jsonio, "atomic_write_bytes", dying)
    monkeypatch.setattr(medcore.nights.registry, "atomic_write_bytes", dying)
    return seen


def _agree(registry: RegistryLayout, runs, condition: str, last_run) -> None:
    """Registry record, trend and the last run's promotion.json (what the report shows) tell one story."""
    import pandas as pd

    record = read_json(registry.record(condition))
    trend = pd.read_csv(registry.trend(condition), dtype={"run_id": str})
    history = {h["run_id"]: h["decision"] for h in record["history"]}
    assert dict(zip(trend["run_id"], trend["decision"])) == history, "one trend row per decision, the same decision"
    promoted = [h["run_id"] for h in record["history"] if h["decision"] == PROMOTED]
    assert record["champion"]["run_id"] == promoted[0], "the champion is the latest promoted run"
    assert Path(record["champion"]["model_path"]).is_file()
    shown = read_json(last_run.promotion_json)["conditions"][condition]["champion"]
    assert shown["run_id"] == record["champion"]["run_id"]
    leftovers = [p.name for p in Path(registry.root).rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


@pytest.mark.parametrize("restart", ["retry", "next night"])
def test_a_promotion_killed_at_every_write_is_repaired_by_a_restart(tmp_path, monkeypatch, restart):
    """Kill the promotion of a better model at each registry write in turn; after a restart (the same promote
    retried, or the next night's run) the record, the trend and the report agree and no .tmp is left (issue 39)."""
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
    config = write_config(tmp_path)
    registry = RegistryLayout(tmp_path / "registry")
    runs = tmp_path / "runs"
    base = write_run(runs, "base", {("knee", "standard"): {"metrics": metrics_with(0.80), "seed": 1}}, config)
    _promote(runs, base)
    better = {"metrics": metrics_with(0.90, versus=paired("base/standard", 0.90, 0.80)), "seed": 2}
    run = write_run(runs, "run", {("knee", "standard"): better}, config, started="2026-11-28T01:00:00+00:00")
    pristine = tmp_path / "pristine"
    shutil.copytree(tmp_path / "registry", pristine)
    with monkeypatch.context() as patch:
        writes = _kill_at_write(patch, registry.root, 0)
        _promote(runs, run)
    assert len(writes) >= 4, writes  # model, split, lineage, trend and record at least
    for at in range(1, len(writes) + 1):
        shutil.rmtree(tmp_path / "registry")
        shutil.copytree(pristine, tmp_path / "registry")
        with monkeypatch.context() as patch:
            _kill_at_write(patch, registry.root, at)
            with pytest.raises(_Killed):
                _promote(runs, run)
        if restart == "retry":
            _promote(runs, run)
            _agree(registry, runs, "knee", run)
        else:
            night = write_run(
                runs,
                f"night{at}",
                {("knee", "standard"): {"metrics": metrics_with(0.70), "seed": 3}},
                config,
                started="2026-11-29T01:00:00+00:00",
            )
            _promote(runs, night)
            _agree(registry, runs, "knee", night)
