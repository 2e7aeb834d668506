"""The champion registry: one decision per condition per run, made on gates and same-split ROC AUC."""

from __future__ import annotations

import os
import shutil

import pytest

from medcore import pipeline
from medcore.config import RegistrySettings, load_config
from medcore.errors import ConfigError
from medcore.jsonio import read_json
from medcore.layout import RegistryLayout
from medcore.registry import KEPT, NO_CHAMPION, PROMOTED, decide
from medcore.registry import test_split_fingerprint as fingerprint  # not collected as a test
from tests.fakes import TEST_FILES, metrics_with, write_config, write_run

SETTINGS = RegistrySettings(gates=(("roc_auc", 0.70), ("recall", 0.50)), tolerance=0.01)


def _candidate(auc: float | None = 0.85, split: str | None = "s1", recall: float = 0.6) -> dict:
    return {"condition": "pneumonia", "profile": "standard", "test_split_fingerprint": split,
            "metrics": {"roc_auc": auc, "recall": recall, "intervals": {"roc_auc": {"low": 0.7, "high": 0.9}}}}


def _champion(auc: float = 0.80, split: str = "s1") -> dict:
    return {"run_id": "old", "profile": "standard", "test_split_fingerprint": split, "metrics": {"roc_auc": auc}}


@pytest.mark.parametrize(("candidate", "champion", "decision", "words"), [
    (None, None, NO_CHAMPION, "no champion yet, and no model of this run succeeded"),
    (None, _champion(), KEPT, "no model of this run succeeded; the champion stays"),
    (_candidate(recall=0.4), None, NO_CHAMPION, "fails the gates: recall 0.400 < 0.50"),
    (_candidate(auc=0.65), _champion(0.5), KEPT, "fails the gates: roc_auc 0.650 < 0.70"),
    (_candidate(auc=None), None, NO_CHAMPION, "roc_auc n/a < 0.70"),
    (_candidate(), None, PROMOTED, "first champion"),
    (_candidate(0.85), _champion(0.80), PROMOTED, "(+0.050) on the same test split"),
    (_candidate(0.795), _champion(0.80), PROMOTED, "(-0.005) on the same test split, tolerance 0.010"),
    (_candidate(0.81), _champion(0.82), PROMOTED, "-0.010"),  # exactly at the tolerance still counts as not worse
    (_candidate(0.75), _champion(0.80), KEPT, "worse than the champion"),
    (_candidate(0.75, split="s2"), _champion(0.95), PROMOTED, "not comparable and the gates alone decided"),
])
def test_decision_table(candidate, champion, decision, words):
    """Every branch of the rule: gates first, then ROC AUC within tolerance, and only on the same test split."""
    result = decide(candidate, champion, SETTINGS)
    assert result["decision"] == decision
    assert words in result["reason"], result["reason"]
    gates_failed = any(not g["passed"] for g in result["gates"])
    if candidate and champion and not gates_failed:
        assert result["same_test_split"] is (candidate["test_split_fingerprint"] == champion["test_split_fingerprint"])


def test_quality_tier_gate():
    """With `min_tier`, a candidate below that tier (e.g. too few test patients) cannot be promoted."""
    import dataclasses

    strict = dataclasses.replace(SETTINGS, min_tier="moderate")
    weak = _candidate()
    weak["metrics"]["quality_tier"] = "insufficient"
    result = decide(weak, None, strict)
    assert result["decision"] == NO_CHAMPION and "tier insufficient below moderate" in result["reason"]
    good = _candidate()
    good["metrics"]["quality_tier"] = "good"
    assert decide(good, None, strict)["decision"] == PROMOTED
    assert decide(weak, None, SETTINGS)["decision"] == PROMOTED, "no tier gate unless configured"


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

    first = write_run(runs, "run1", {("pneumonia", "standard"): {"metrics": metrics_with(0.80), "seed": 1},
                                     ("pneumonia", "intensive"): {"metrics": metrics_with(0.86), "seed": 2}}, config)
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

    second = write_run(runs, "run2", {("pneumonia", "standard"): {"metrics": metrics_with(0.84), "seed": 3}}, config,
                       started="2026-11-28T01:00:00+00:00")
    decision = _promote(runs, second)["pneumonia"]
    assert decision["decision"] == KEPT and "worse than the champion" in decision["reason"]
    assert decision["same_test_split"] is True and decision["delta_roc_auc"] == pytest.approx(0.84 - 0.86)
    assert read_json(registry.record("pneumonia"))["champion"]["run_id"] == "run1"

    again = _promote(runs, second)["pneumonia"]
    assert again["decision"] == KEPT and again["redecided"] is True
    assert len(read_json(registry.record("pneumonia"))["history"]) == 2, "a rerun replaces its decision, never adds one"

    third = write_run(runs, "run3", {("pneumonia", "standard"): "train", ("pneumonia", "intensive"): "killed"},
                      config, started="2026-11-29T01:00:00+00:00")
    decision = _promote(runs, third)["pneumonia"]
    assert decision["decision"] == KEPT and "no model of this run succeeded (standard, intensive failed)" in decision["reason"]

    assert _promote(runs, first)["pneumonia"].get("repeated") is True, "later runs decided since: run1's decision stands"
    shutil.rmtree(first.root)  # old runs get deleted; the champion must survive that
    assert copied.is_file() and read_json(registry.record("pneumonia"))["champion"]["model_path"] == str(copied)

    fourth = write_run(runs, "run4", {("pneumonia", "standard"): {"metrics": metrics_with(0.855), "seed": 4}}, config,
                       started="2026-11-30T01:00:00+00:00")
    decision = _promote(runs, fourth)["pneumonia"]
    assert decision["decision"] == PROMOTED and "(-0.005) on the same test split" in decision["reason"]
    assert decision["champion_before"]["run_id"] == "run1" and decision["champion"]["run_id"] == "run4"
    kept = sorted(p.name for p in (tmp_path / "registry" / "pneumonia").glob("*.keras"))
    assert kept == ["run1__intensive.keras", "run4__standard.keras"], "the new champion and the one it replaced"


def test_rerun_after_retrain_decides_again(tmp_path, monkeypatch):
    """Clearing a run's tasks retrains its model: promote then undoes its own decision and decides on the new files."""
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
    config, runs = write_config(tmp_path), tmp_path / "runs"
    registry = RegistryLayout(tmp_path / "registry")
    base = write_run(runs, "base", {("knee", "standard"): {"metrics": metrics_with(0.80), "seed": 1}}, config)
    _promote(runs, base)
    run = write_run(runs, "run", {("knee", "standard"): {"metrics": metrics_with(0.90), "seed": 2}}, config,
                    started="2026-11-28T01:00:00+00:00")
    assert _promote(runs, run)["knee"]["decision"] == PROMOTED
    copy = tmp_path / "registry" / "knee" / "run__standard.keras"
    assert copy.read_bytes() == run.model("knee", "standard").model.read_bytes()

    write_run(runs, "run", {("knee", "standard"): {"metrics": metrics_with(0.85), "seed": 3}}, config,
              started="2026-11-28T01:00:00+00:00")  # the retrain: another model, another score
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


def test_other_test_split_is_decided_on_gates(tmp_path, monkeypatch):
    """A champion measured on other test images is not compared by AUC: a lower AUC can still be promoted."""
    monkeypatch.setenv("MEDCORE_REGISTRY_ROOT", str(tmp_path / "elsewhere"))
    config, runs = write_config(tmp_path), tmp_path / "runs"
    first = write_run(runs, "a", {("limb", "standard"): {"metrics": metrics_with(0.95)}}, config)
    assert _promote(runs, first)["limb"]["decision"] == PROMOTED
    other_split = TEST_FILES[:-2] + [("test/NEW/1.png", 1), ("test/NEW/2.png", 0)]
    second = write_run(runs, "b", {("limb", "standard"): {"metrics": metrics_with(0.75), "test_files": other_split}},
                       config, started="2026-11-28T01:00:00+00:00")
    decision = _promote(runs, second)["limb"]
    assert decision["decision"] == PROMOTED and decision["same_test_split"] is False
    assert "not comparable" in decision["reason"]
    assert (tmp_path / "elsewhere" / "limb.json").is_file(), "MEDCORE_REGISTRY_ROOT overrides the config"


def test_gates_and_no_champion(tmp_path, monkeypatch):
    """A candidate below a gate never becomes the first champion; each condition gets its own decision."""
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
    config, runs = write_config(tmp_path, gates="{roc_auc_low: 0.70}"), tmp_path / "runs"
    run = write_run(runs, "r", {("pneumonia", "standard"): {"metrics": metrics_with(0.80)},  # AUC low 0.608
                                ("knee", "standard"): {"metrics": metrics_with(0.92)},  # AUC low 0.728
                                ("cardiomegaly", "standard"): "validate"}, config)
    decisions = _promote(runs, run)
    assert decisions["pneumonia"]["decision"] == NO_CHAMPION and "roc_auc_low 0.608 < 0.70" in decisions["pneumonia"]["reason"]
    assert decisions["knee"]["decision"] == PROMOTED
    assert decisions["cardiomegaly"]["decision"] == NO_CHAMPION
    assert not (tmp_path / "registry" / "pneumonia").exists(), "nothing copied for a model that was not promoted"


def test_registry_config_errors_name_the_key(tmp_path):
    """Unknown gates and bad values are config errors naming the key; a null gate drops it."""
    with pytest.raises(ConfigError, match=r"registry\.gates\.auc: unknown key"):
        load_config(write_config(tmp_path, gates="{auc: 0.7}"))
    with pytest.raises(ConfigError, match=r"registry\.tolerance: must be between"):
        load_config(write_config(tmp_path, tolerance=2))
    with pytest.raises(ConfigError, match=r"notify\.recipients: must be a list of e-mail addresses"):
        load_config(write_config(tmp_path, extra="notify: {recipients: [nobody]}\n"))
    config = load_config(write_config(tmp_path, gates="{roc_auc: 0.8, recall: null}",
                                      extra="notify: {recipients: [a@example.org], conn_id: mail}\n"))
    assert config.registry.gates == (("roc_auc", 0.8),)
    assert config.registry.root == tmp_path / "registry"
    assert config.notify.recipients == ("a@example.org",) and config.notify.conn_id == "mail"


def test_registry_lock_gives_up_after_its_timeout_naming_the_holder(tmp_path):
    """A promotion waiting on a stuck holder fails within its timeout with one line naming lock and holder."""
    import time

    from medcore.errors import StageError
    from medcore.registry import _locked

    lock = tmp_path / "registry" / ".c.lock"
    with _locked(lock):
        start = time.monotonic()
        with pytest.raises(StageError) as caught:  # flock is per open file, so a second open conflicts here too
            with _locked(lock, timeout=0.3):
                pass
        waited = time.monotonic() - start
    message = str(caught.value)
    assert 0.3 <= waited < 5, waited
    assert str(lock) in message and "still held after" in message and f"pid {os.getpid()}" in message
    assert "\n" not in message
    with _locked(lock, timeout=0.3):  # released: the next one gets it at once
        pass
