"""The night planner: predictions from a machine's figures, the ladder it cuts by, and the recorded nights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from medcore.nights.budget import (
    LADDER,
    PROGRESSIVE_LEFT_OUT,
    Chain,
    Speed,
    cpu_id,
    epoch_cost_from_history,
    fit_night,
    machine_speed,
    pack,
    predict_chain,
    speed_from_records,
)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
RUNGS = [name for name, _ in LADDER]

# The shipped cold night's chains: conditions.yaml's profiles and epochs, the real sets' train and test images
# as the cold night of 2026-12-01 trained them (bench/results/nightly.json).
SHIPPED = [
    Chain("pneumonia", "standard", 128, 6, 3995, test_images=560, min_epochs=3),
    Chain("pneumonia", "intensive", 160, 5, 3995, test_images=560, min_epochs=3),
    Chain("cardiomegaly", "standard", 128, 6, 3768, test_images=1002, min_epochs=3),
    Chain("cardiomegaly", "intensive", 160, 5, 3768, test_images=1002, min_epochs=3),
    Chain("knee_osteoarthritis", "standard", 128, 15, 3642, test_images=940, min_epochs=8),
    Chain("knee_osteoarthritis", "intensive", 160, 5, 3642, test_images=940, min_epochs=3),
    Chain("knee_osteoporosis", "standard", 128, 6, 58, test_images=68, crossval_trainings=10, min_epochs=3),
    Chain("knee_osteoporosis", "intensive", 160, 5, 58, test_images=68, crossval_trainings=10, min_epochs=3),
    Chain("limb_abnormalities", "standard", 128, 18, 1082, test_images=87, min_epochs=9),
    Chain("limb_abnormalities", "intensive", 160, 15, 1082, test_images=87, min_epochs=8),
]
# A bf16 machine's figures (the Zen 5's cold night, nightly_amd_20261130.json, rounded) and an AVX2-only EPYC's
# (family 23: 37.4 min for 6 epochs of 1,098 images, nights30_s7_retrain_last.json), fixed stages scaled alike.
FAST = Speed("zen5", "test", {128: 0.055, 160: 0.081}, startup_seconds=55, evaluate_seconds=60, gradcam_seconds=70)
SLOW = Speed("avx2", "test", {128: 0.34}, startup_seconds=340, evaluate_seconds=370, gradcam_seconds=430)


def _fits_with_one_more_epoch(plan, speed: Speed) -> list[str]:
    """Chains whose cut epochs could be one more and the night still fit (a planner cutting too far)."""
    chains = {(c.condition, c.profile): c for c in SHIPPED}
    kept = {(c["condition"], c["profile"]): c["epochs"] for c in plan.chains}
    loose = []
    for key, epochs in kept.items():
        if epochs < chains[key].epochs:
            trial = {**kept, key: epochs + 1}
            items = [(k, predict_chain(chains[k], speed, e), 1) for k, e in trial.items()]
            if pack(items, plan.slots)[0] <= plan.budget_minutes:
                loose.append("/".join(key))
    return loose


def test_a_slow_machine_is_cut_by_the_ladder_only_as_far_as_it_must_and_says_why():
    """AVX2-like figures: the 14-hour night is fitted into 240 min by fewer epochs, then standard only; each cut
    says why, in ladder order, and no cut epoch could be given back without passing the budget."""
    plan = fit_night(SHIPPED, SLOW, 240, slots=2)
    assert plan.full_plan_minutes > 600  # the night as shipped: about 14 hours
    assert plan.fits and plan.predicted_minutes <= 240
    rungs = [c.rung for c in plan.cuts]
    assert set(rungs) == {"epochs", "standard_only"}
    assert rungs == sorted(rungs, key=RUNGS.index)  # the ladder's order
    assert {c.profile for c in plan.cuts if c.rung == "standard_only"} == {"intensive"}
    assert all("over the 240-min budget" in c.why for c in plan.cuts)
    assert PROGRESSIVE_LEFT_OUT in plan.notes  # rung 3 is said to be left out, not silently skipped
    assert not any(c.rung == "skip_condition" for c in plan.cuts)  # no champion is good: none may be skipped
    assert _fits_with_one_more_epoch(plan, SLOW) == []
    totals = [c["predicted_minutes"]["total"] for c in plan.chains]
    assert plan.chains[0]["start_minute"] == plan.chains[1]["start_minute"] < 1  # after validation
    assert totals[:2] == sorted(totals, reverse=True)[:2]  # the two longest start at once: longest first


def test_a_fast_machine_keeps_the_full_plan():
    """bf16 figures: the shipped night fits, so nothing is cut and every chain keeps its epochs."""
    plan = fit_night(SHIPPED, FAST, 240, slots=2)
    assert plan.fits and plan.cuts == [] and plan.notes == []
    assert plan.predicted_minutes == plan.full_plan_minutes < 240
    assert len(plan.chains) == len(SHIPPED)
    assert all(c["epochs"] == c["epochs_asked"] for c in plan.chains)


def test_rung_five_skips_a_condition_whose_champion_is_still_good_and_says_so():
    """Where standard-only at the epoch floor is still too long, a condition with a good champion is skipped."""
    plan = fit_night(SHIPPED, SLOW, 150, slots=2, good_champions={"knee_osteoarthritis": "run1/standard, tier good"})
    skipped = [c for c in plan.cuts if c.rung == "skip_condition"]
    assert [c.condition for c in skipped] == ["knee_osteoarthritis"]
    assert "still good (run1/standard, tier good)" in skipped[0].why
    assert all(c["condition"] != "knee_osteoarthritis" for c in plan.chains)


def test_a_budget_nothing_fits_says_so():
    """One epoch of everything still over: the plan says it does not fit rather than pretending."""
    plan = fit_night(SHIPPED, SLOW, 10, slots=2)
    assert not plan.fits
    assert "DOES NOT FIT" in plan.lines()[0]
    assert any("below night.min_epoch_share" in n for n in plan.notes)


def test_pack_keeps_the_pool_full_longest_first():
    """Three 1-slot trainings of 60, 40 and 30 min on 2 slots: 60 alone, 40 then 30 beside it: 70 min."""
    items = [(k, {"validate": 0.0, "train": m, "total": m}, 1) for k, m in (("a", 30.0), ("b", 60.0), ("c", 40.0))]
    makespan, placed = pack(items, 2)
    assert makespan == 70.0
    assert [p["key"] for p in placed] == ["b", "c", "a"]


def test_evaluation_and_gradcam_run_beside_the_next_training():
    """Only training holds a pool slot: a chain's evaluation does not delay the next training on its slot."""
    items = [(k, {"validate": 0.0, "train": 10.0, "evaluate": 5.0, "total": 15.0}, 1) for k in "ab"]
    assert pack(items, 1)[0] == 25.0  # 10 + 10, then the last evaluation


def test_speed_from_records_uses_only_full_trainings():
    """Per-size seconds per image-epoch from training.json records; tiny, progressive and resumed ones are left out."""
    records = [
        {"image_size": 128, "train_images": 1000, "epochs_run": 4, "wall_seconds": 460, "seconds_to_first_step": 60},
        {"image_size": 128, "train_images": 50, "epochs_run": 4, "wall_seconds": 460, "seconds_to_first_step": 60},
        {"image_size": 128, "train_images": 1000, "epochs_run": 4, "wall_seconds": 9000, "progressive": {"epochs": 1}},
        {"image_size": 128, "train_images": 1000, "epochs_run": 4, "wall_seconds": 9000, "resumed_from_epoch": 2},
    ]
    speed = speed_from_records(records, "cpu", "test")
    assert speed.per_image_epoch(128) == pytest.approx(0.1)
    assert speed.per_image_epoch(256) == pytest.approx(0.4)  # by pixels from the nearest measured size
    assert speed.startup_seconds == 60
    assert speed_from_records(records[1:2], "cpu", "test") is None


def test_machine_speed_reads_only_this_cpus_graph_trainings(tmp_path):
    """Earlier runs' training.json on another CPU kind, or eager (demo), never set this machine's speed."""
    for run, cpu, execution, wall in (
        ("r1", "mine", "graph", 460),
        ("r2", "other", "graph", 46),
        ("r3", "mine", "eager", 46),
    ):
        folder = tmp_path / run / "pneumonia" / "standard"
        folder.mkdir(parents=True)
        (tmp_path / run / "run.json").write_text("{}")
        record = {"image_size": 128, "train_images": 1000, "epochs_run": 4, "wall_seconds": wall,
                  "seconds_to_first_step": 60, "execution": execution, "machine": {"cpu_id": cpu}}  # fmt: skip
        (folder / "training.json").write_text(json.dumps(record))
        (folder / "timings.json").write_text(json.dumps({"evaluate": {"seconds": 42.0}}))
    speed = machine_speed(tmp_path, "mine")
    assert speed.per_image_epoch(128) == pytest.approx(0.1) and "r1" in speed.source
    assert speed.measured[("pneumonia", "standard", "retrain")]["evaluate"] == 42.0
    assert machine_speed(tmp_path, "nobody") is None


def test_epoch_cost_reads_the_val_auc_at_fewer_epochs():
    """The cost of a cut: best val AUC within the kept epochs against the best of all, from an earlier history."""
    words = epoch_cost_from_history({"val_auc": [0.6, 0.7, 0.8, 0.75]}, 2)
    assert "0.700 against 0.800" in words and "-0.100" in words
    assert epoch_cost_from_history({"val_auc": [0.6]}, 2) is None


def test_cpu_id_names_family_model_and_isa(tmp_path):
    """The CPU id tells two EPYCs of one name apart by family and model, and says its ISA."""
    info = tmp_path / "cpuinfo"
    info.write_text(
        "vendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 1\nstepping\t: 2\nflags\t\t: fpu avx2 fma\n"
    )
    assert cpu_id(info) == "amd family 23 model 1 stepping 2 avx2"


@pytest.mark.skipif(not (RESULTS / "nightly.json").exists(), reason="recorded nights not in bench/results")
def test_recorded_bf16_nights_keep_the_full_plan_and_are_predicted_within_20_percent():
    """Backtest: each bf16 night's chains predicted from the night's other chains (leave one out); the planner keeps
    the full plan for 240 min and its night is within 20 % of the measured one."""
    sys.path.insert(0, str(ROOT / "bench"))
    from night_cost import backtest, chain_of, night_speed, recorded_night

    for name in ("nightly.json", "nightly_amd_20261130.json"):
        night = recorded_night(name)
        result = backtest(night, lambda c, n=night: night_speed(n, (c["condition"], c["profile"])))
        assert abs(result["night_error"]) <= 0.20, result
        plan = fit_night([chain_of(c) for c in night["chains"]], night_speed(night), 240, slots=2)
        assert plan.cuts == [] and plan.fits


@pytest.mark.skipif(not (RESULTS / "nightly_following.json").exists(), reason="recorded nights not in bench/results")
def test_the_following_night_is_predicted_from_the_cold_night_before_it():
    """Backtest across nights: the Xeon's following night from its cold night's figures, per chain within 20 %."""
    sys.path.insert(0, str(ROOT / "bench"))
    from night_cost import backtest, night_speed, recorded_night

    cold = night_speed(recorded_night("nightly.json"))
    result = backtest(recorded_night("nightly_following.json"), lambda c: cold)
    assert result["worst_abs_error"] <= 0.20, result
    assert abs(result["night_error"]) <= 0.20


def test_only_a_champion_at_the_minimum_tier_or_better_may_be_skipped(tiny_config):
    """Rung 5's candidates come from the registry: a `moderate` champion qualifies (min_tier moderate), a champion
    rated `insufficient` and a condition without one do not."""
    from medcore.config import load_config
    from medcore.nights.budget import good_champions
    from medcore.nights.registry import registry_of

    config = load_config(tiny_config)
    registry = registry_of(config)
    for condition, tier in (("pneumonia", "moderate"), ("cardiomegaly", "insufficient")):
        registry.record(condition).parent.mkdir(parents=True, exist_ok=True)
        champion = {"run_id": "n1", "profile": "standard", "metrics": {"quality_tier": tier}}
        registry.record(condition).write_text(json.dumps({"condition": condition, "champion": champion}))
    good = good_champions(config, ["pneumonia", "cardiomegaly", "limb_abnormalities"])
    assert good == {"pneumonia": "n1/standard, tier moderate"}


def test_the_probe_is_measured_once_per_cpu_id_and_a_failed_probe_gives_no_speed(tmp_path):
    """The child's JSON becomes a speed (val share added) and is cached under the runs root by CPU id; a probe that
    fails or times out gives None, so the plan keeps the full night and says why."""
    from medcore.nights.budget import PROBE_WALL_PER_CPU, SPEED_DIR, probe_speed

    calls = []

    def child(command, timeout):
        calls.append(command)
        return (
            'noise\n{"image_size": 128, "seconds_per_image": 0.3, "steps": 6, "precision": "float32", "version": 2}\n'
        )

    speed = probe_speed(tmp_path, "amd family 23 model 1 stepping 2 avx2", run=child)
    assert speed.per_image_epoch(128) == pytest.approx(0.3 * (1 + 0.2 / 3) * PROBE_WALL_PER_CPU)
    assert "probe" in speed.source and len(calls) == 1 and "medcore.nights.speed_probe" in calls[0]
    assert (tmp_path / SPEED_DIR / "amd_family_23_model_1_stepping_2_avx2.json").is_file()
    assert probe_speed(tmp_path, "amd family 23 model 1 stepping 2 avx2", run=child) == speed and len(calls) == 1
    # A figure the earlier probe cached (small batches, one step each: 39 % high on an AVX2 EPYC) is measured again.
    (tmp_path / SPEED_DIR / "old_cpu.json").write_text('{"image_size": 128, "seconds_per_image": 0.9, "steps": 2}')
    assert probe_speed(tmp_path, "old cpu", run=child).per_image_epoch(128) == speed.per_image_epoch(128)
    assert len(calls) == 2

    def broken(command, timeout):
        raise RuntimeError("probe took over 90 s")

    assert probe_speed(tmp_path, "another cpu", run=broken) is None


def test_a_cold_chain_is_counted_and_cross_validated_as_validation_would_split_it(tiny_config, tmp_path):
    """Before any night, each chain's images come from the set's listing split as validation splits it, and a set
    whose test split is too small for a tier plans its fold trainings: a cold AVX2 night predicted knee
    osteoporosis at 5.4 min without them and took 23.2."""
    from medcore.assess.crossval import needs_cross_validation
    from medcore.config import load_config
    from medcore.data.validation import validate_condition
    from medcore.nights.budget import chains_for

    crossval = tmp_path / "crossval.yaml"  # the tiny config keeps small test splits; this asks for folds
    crossval.write_text(f"extends: {tiny_config}\nevaluation: {{small_sets: crossval}}\n")
    config = load_config(crossval)
    jobs = [{"condition": name, "profile": "standard"} for name in config.conditions]
    chains = {c.condition: c for c in chains_for(config, jobs, tmp_path / "no-nights-yet")}
    assert set(chains) == set(config.conditions)
    for name, chain in chains.items():
        condition = config.conditions[name]
        manifest = validate_condition(config, condition, config.profiles["standard"].for_condition(condition)).manifest
        sizes = manifest["split"].value_counts()
        planned = {"train": chain.train_images, "val": chain.val_images, "test": chain.test_images}
        if manifest["relpath"].str.lower().str.endswith(".dcm").any():
            # A DICOM's patient is in its header, which only validation decodes: the listing draws those by file,
            # so only the total is validation's.
            assert abs(sum(planned.values()) - len(manifest)) <= 1, (name, planned)
        else:
            assert all(abs(n - sizes.get(split, 0)) <= 1 for split, n in planned.items()), (name, planned, sizes)
        folds = config.evaluation.crossval_folds * config.evaluation.crossval_repeats
        assert chain.crossval_trainings == (folds if needs_cross_validation(manifest, config.evaluation) else 0), name
    assert any(c.crossval_trainings for c in chains.values()), "the demo sets hold no small set: the test says nothing"
