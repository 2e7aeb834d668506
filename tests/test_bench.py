"""bench/: BENCHMARKS.md is regenerated from raw JSON alone, and the benchmarks skip cleanly without data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import BASE_METRICS, TRAINING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.common import CpuSampler, machine  # noqa: E402
from bench.reporting import night as r_night  # noqa: E402
from bench.reporting import pairs as r_pairs  # noqa: E402
from bench.reporting import profile as r_profile  # noqa: E402


def _model(condition: str, profile: str, auc: float | None, status: str = "succeeded") -> dict:
    metrics = {**BASE_METRICS, "roc_auc": auc}
    training = {
        k: TRAINING.get(k)
        for k in ("image_size", "epochs_run", "epochs_planned", "early_stopped", "wall_seconds", "images_per_second")
    } | {"peak_memory_mb": 2048.0}
    if status != "succeeded":
        training = dict.fromkeys(training)  # as bench.common.model_rows reads a model with no training.json
    return {
        "condition": condition,
        "profile": profile,
        "status": status,
        "failure": None if status == "succeeded" else {"stage": "train", "error": "boom"},
        "test": {k: metrics.get(k) for k in ("n", "n_positive", "roc_auc", "accuracy", "recall", "specificity")},
        "intervals": metrics["intervals"],
        "bootstrap_unit": "patient",
        "tier": "good",
        "training": training,
    }


def _write(results: Path, name: str, payload: dict) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(
        json.dumps({"benchmark": name, "machine": machine(), "versions": {"keras": "3"}, **payload})
    )


def test_report_tables_come_from_the_raw_results(tmp_path):
    """Figures, intervals, target verdicts and the wall/CPU verdicts are all read off the JSON files."""
    results = tmp_path / "results"
    _write(
        results,
        "nightly",
        {
            "config": "conditions.yaml",
            "models": [
                _model("pneumonia", "standard", 0.9512),
                _model("limb_abnormalities", "standard", 0.85),
                _model("cardiomegaly", "intensive", None, status="failed"),
            ],
            "run": {
                "state": "failed",
                "wall_seconds": 7500.0,
                "cpu_busy": 0.934,
                "executor": "LocalExecutor",
                "database": "sqlite",
            },
        },
    )
    _write(
        results,
        "train_throughput",
        {
            "images": 128,
            "epochs": 3,
            "sizes": {
                "128": {
                    "pipeline": {"steady_images_per_second": 9.0, "seconds_to_first_step": 40.0},
                    "plain": {"steady_images_per_second": 10.0, "seconds_to_first_step": 35.0},
                    "ratio": 0.9,
                    "one_task_2_threads": 10.0,
                    "two_tasks_1_thread": 12.5,
                }
            },
        },
    )
    _write(
        results,
        "overhead",
        {
            "workload": "two models",
            "ratio": 1.05,
            "modes": {
                "medcore_run": {"wall_seconds": 200.0, "cpu_busy": 0.8},
                "scheduler": {"wall_seconds": 210.0, "cpu_busy": 0.9},
            },
        },
    )

    text = report.render(results)

    assert "| pneumonia | standard | 32 | 0.951 (0.620–0.960) |" in text
    assert "≥ 0.96: missed by 0.009 (its interval reaches it)" in text
    assert "| limb_abnormalities | standard | 32 | 0.850" in text and "≥ 0.80: met" in text
    assert "| cardiomegaly | intensive | – | failed at train |" in text
    assert "| 2/3 succeeded | failed | 125.0 min | 93% |" in text
    assert "A cold night within 240 min: met; CPU busy ≥ 90 %: met" in text
    assert "A following night: _Not measured yet" in text
    assert "| 128 px | 9.0 | 10.0 | **0.900** |" in text and "Target ratio ≥ 0.90: met" in text
    assert "| 12.5 |" in text
    assert "| DAG run under the scheduler (LocalExecutor, SQLite) | 210 s | **1.05** | 90% |" in text
    assert "Kermany et al. 2018" in text  # the published reference beside the condition's own figures
    # Benchmarks not run yet say which command makes their file, rather than showing an empty table.
    assert "bench/gradcam_speed.py` writes `bench/results/stages_speed.json`" in text


def test_following_night_is_held_to_its_own_budget_beside_the_cold_one():
    """The night after the first has 90 minutes, not the cold night's 240; skipped models are counted apart."""
    run = {"state": "success", "executor": "LocalExecutor", "database": "sqlite"}
    cold = {
        "config": "conditions.yaml",
        "run": run | {"wall_seconds": 150 * 60.0, "cpu_busy": 0.97},
        "models": [_model("pneumonia", "standard", 0.95) | {"mode": "retrain"}],
    }
    continued = _model("pneumonia", "standard", 0.95) | {"mode": "continue"}
    skipped = _model("cardiomegaly", "standard", None, "skipped") | {"mode": "skip"}
    following = {
        "config": "configs/following-night.yaml",
        "after": {"run_id": "bench_nightly_1"},
        "run": run | {"wall_seconds": 100 * 60.0, "cpu_busy": 0.85},
        "models": [continued, skipped],
    }

    text = r_night.nightly_table(cold, following)

    assert "| cold (no champions) | 1/1 succeeded | success | 150.0 min | 97% |" in text and "| retrain |" in text
    following_row = (
        "| following (champions of `bench_nightly_1`) | 1/2 succeeded, 1 skipped | success | 100.0 min | 85% |"
    )
    assert following_row in text
    assert "| continue, skip |" in text
    assert "A cold night within 240 min: met; CPU busy ≥ 90 %: met." in text
    assert "A following night within 90 min: missed by 10 min; CPU busy ≥ 90 %: missed by 5 points." in text


def test_following_night_refuses_an_earlier_run_that_left_no_champions(tmp_path, monkeypatch):
    import bench.nightly as nightly

    monkeypatch.setattr(nightly, "ROOT", tmp_path)
    run_folder = tmp_path / "runs" / "bench" / "nightly-1" / "runs" / "bench_nightly_1"
    run_folder.mkdir(parents=True)
    result = tmp_path / "nightly.json"
    result.write_text(json.dumps({"run_folder": str(run_folder.relative_to(tmp_path)), "run": {"run_id": "r"}}))
    with pytest.raises(SystemExit, match="left no champions"):
        nightly.earlier_night(result)
    registry = run_folder.parents[1] / "registry"
    registry.mkdir()
    (registry / "pneumonia.json").write_text("{}")
    assert nightly.earlier_night(result) == (registry, {"result": "nightly.json", "run_id": "r"})


def test_shared_backbone_section_compares_each_model_with_its_scratch_run(tmp_path):
    results = tmp_path / "results"
    run = {
        "state": "success",
        "wall_seconds": 3000.0,
        "cpu_busy": 0.91,
        "executor": "LocalExecutor",
        "database": "sqlite",
    }
    _write(
        results,
        "nightly",
        {
            "config": "conditions.yaml",
            "run": run,
            "models": [_model("pneumonia", "standard", 0.950), _model("limb_abnormalities", "standard", 0.60)],
        },
    )
    _write(
        results,
        "nightly_shared",
        {
            "config": "configs/shared-backbone.yaml",
            "run": run,
            "models": [_model("pneumonia", "standard", 0.962), _model("limb_abnormalities", "standard", 0.55)],
            "shared_backbone": {
                "profile": "standard",
                "image_size": 64,
                "conditions": ["pneumonia", "limb_abnormalities"],
                "images": {"pneumonia": {"train": 3000, "val": 500}, "limb_abnormalities": {"train": 1000, "val": 100}},
                "test_lookalikes_dropped": {"pneumonia": 0, "limb_abnormalities": 2},
                "epochs": 8,
                "best_epoch": 7,
                "val_auc": {"pneumonia": 0.99, "limb_abnormalities": 0.7},
                "wall_seconds": 2400.0,
                "images_per_second": 40.0,
                "threads": {"intra_op": None},
            },
        },
    )

    text = report.render(results)

    assert "learnt from 4,000 train images of 2 conditions" in text and "(7 of 8) on 600 val images" in text
    assert "2 train/val images that were near duplicates" in text
    assert "| pneumonia | standard | 0.950 | 0.962 (0.620–0.960) | +0.012 |" in text and "≥ 0.96: met" in text
    assert "| limb_abnormalities | standard | 0.600 | 0.550 (0.620–0.960) | -0.050 |" in text


def test_report_regenerates_without_any_results(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    docs = tmp_path / "docs"
    assert report.main(["--results", str(tmp_path / "none"), "--out", str(out), "--docs", str(docs)]) == 0
    assert sorted(p.name for p in docs.iterdir()) == [
        "accuracy.md",
        "nights.md",
        "resize.md",
        "stages.md",
        "throughput.md",
    ]
    # nightly.json feeds two sections (accuracy, and the whole night), each saying so; night_cost.json one more;
    # budgeted nights one more; the shortcut probes (border_erase.json) one more; the summary says so once per question.
    assert sum(p.read_text().count("_Not measured yet") for p in docs.iterdir()) == 15
    assert out.read_text().count("_Not measured yet") == 9


def test_cpu_sampler_reads_a_busy_fraction():
    sampler = CpuSampler()
    sum(i * i for i in range(300_000))
    assert 0.0 <= sampler.busy() <= 1.0


@pytest.mark.parametrize("script", ["bench/nightly.py", "bench/overhead.py", "bench/nights.py", "bench/resize.py"])
def test_real_data_benchmarks_skip_cleanly_without_the_sets(tmp_path, script):
    env = {**os.environ, "MEDCORE_DATA_ROOT": str(tmp_path / "absent")}
    done = subprocess.run([sys.executable, str(ROOT / script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("skipped: the real sets are not there")
    assert not (ROOT / "bench" / "results" / "absent").exists()


def test_ensemble_averages_the_profiles_logits_on_the_same_test_images(tmp_path):
    """A profile that ranks perfectly plus one that says 0.5 for everything still ranks perfectly;
    a condition with only one succeeded profile has no ensemble."""
    from bench.common import ensemble_rows
    from tests.fakes import TEST_FILES, write_run

    run = write_run(
        tmp_path / "runs",
        "r1",
        {
            ("pneumonia", "standard"): "ok",
            ("pneumonia", "intensive"): "ok",
            ("limb", "standard"): "ok",
            ("limb", "intensive"): "train",
        },
    )
    for profile, probability in (
        ("standard", lambda label, i: 0.6 + 0.03 * i if label else 0.1 + 0.03 * i),
        ("intensive", lambda label, i: 0.5),
    ):
        rows = ["relpath,path,label,probability,predicted,group"]
        rows += [
            f"{rel},/data/{rel},{label},{probability(label, i)},{label},p{i}"
            for i, (rel, label) in enumerate(TEST_FILES)
        ]
        run.model("pneumonia", profile).predictions_csv.write_text("\n".join(rows) + "\n")

    (row,) = ensemble_rows(run.runs_root, run.run_id)
    assert row["condition"] == "pneumonia" and row["profiles"] == ["standard", "intensive"]
    assert row["members"] == {"standard": 1.0, "intensive": 0.5}
    assert row["roc_auc"] == 1.0 and row["n"] == len(TEST_FILES)


def _speed(rate: float, low: float, high: float) -> dict:
    return {"images_per_second": rate, "min": low, "max": high, "spread": (high - low) / rate, "share_of_peak": 0.25}


def test_throughput_tables_state_ratio_spread_precisions_threads_and_share_of_peak(tmp_path):
    results = tmp_path / "results"
    _write(
        results,
        "peak",
        {
            "peak": {"float32": {"gflops": 500.0, "matrix": 2048}, "bfloat16": {"gflops": 900.0}},
            "training_factor": 3.0,
            "training_flops_per_image": {"64": 1.4e9, "128": 6.25e9},
        },
    )
    _write(
        results,
        "train_throughput",
        {
            "rounds": 4,
            "load_before": [0.5, 1.0, 2.0],
            "load_after": [1.9, 1.5, 2.0],
            "sizes": {
                "128": {
                    "decode": {"images_per_second": 300.0},
                    "pipeline": {
                        "float32": {**_speed(19.0, 18.5, 19.5), "seconds_to_first_step": 30.0},
                        "mixed_bfloat16+fused_bn": _speed(30.0, 29.0, 31.0),
                    },
                    "plain": {"float32": _speed(20.0, 19.0, 21.0), "mixed_bfloat16": _speed(22.0, 21.0, 23.0)},
                    "ratio": 0.95,
                    "ratio_noise": 0.1,
                    "threads": {
                        "1 task, intra 2 / inter 2": {"images_per_second": 20.0},
                        "2 tasks, intra 1 / inter 1 each": {"images_per_second": 17.5},
                    },
                }
            },
        },
    )
    _write(
        results,
        "precision_profile",
        {
            "size": 128,
            "batch": 32,
            "steps": 4,
            "variants": {
                "mixed_bfloat16": {
                    "images_per_second": 12.0,
                    "onednn": {"isas": ["avx512_core_bf16"]},
                    "ms_by_category": {"convolution": 50.0, "batch norm": 30.0, "cast": 20.0},
                }
            },
        },
    )

    text = report.render(results)

    assert "`mixed_bfloat16+fused_bn` 30.0 (29.0–31.0) img/s against 19.0: **×1.58**" in text
    assert "| 128 px | 20.0 | 17.5 |" in text and "before 0.5/1.0/2.0" in text
    assert "| `mixed_bfloat16` | 12.0 | avx512_core_bf16 | 50% | 30% | 0% | 20% |" in text


def test_results_from_an_amx_machine_get_their_own_section_and_machine_line(tmp_path):
    """An AMX machine's peak, precisions and kernels render apart, and the header names both machines."""
    results = tmp_path / "results"
    _write(
        results,
        "overhead",
        {"workload": "two models", "ratio": 1.0, "modes": {"medcore_run": {"wall_seconds": 100.0, "cpu_busy": 0.5}}},
    )
    amx = {**machine(), "cpu": "Intel(R) Xeon(R) Processor", "flags": ["avx512f", "amx_bf16"]}
    payloads = {
        "peak_amx": {
            "peak": {"float32": {"gflops": 330.0, "matrix": 2048}, "bfloat16": {"gflops": 1360.0}},
            "training_factor": 3.0,
            "training_flops_per_image": {"128": 5.59e9},
        },
        "precision_profile_amx": {
            "size": 128,
            "batch": 32,
            "steps": 4,
            "variants": {
                "mixed_bfloat16+fused_bn": {
                    "images_per_second": 40.0,
                    "onednn": {"isas": ["avx512_core_amx"]},
                    "ms_by_category": {"convolution": 75.0, "batch norm": 25.0},
                }
            },
        },
    }
    for name, payload in payloads.items():
        (results / f"{name}.json").write_text(
            json.dumps({"benchmark": name, "machine": amx, "versions": {"keras": "3"}, **payload})
        )

    text = report.render(results)

    assert "## Precision on a CPU with AMX" in text and "Measured on Intel(R) Xeon(R) Processor (AMX)" in text
    assert "| `mixed_bfloat16+fused_bn` | 40.0 | avx512_core_amx | 75% | 25% |" in text
    assert "_Not measured yet" in text.split("## Precision on a CPU with AMX")[1].split("\n#")[0]
    assert text.count("- **Machines**:") == 2
    assert "measured here: peak_amx, precision_profile_amx" in text
    assert "measured here: overhead" in text


def test_one_machine_gets_one_machine_line_and_no_amx_section(tmp_path):
    results = tmp_path / "results"
    _write(
        results,
        "overhead",
        {"workload": "two models", "ratio": 1.0, "modes": {"medcore_run": {"wall_seconds": 100.0, "cpu_busy": 0.5}}},
    )
    text = report.render(results)
    assert text.count("- **Machine**:") == 1 and "; measured here:" not in text
    assert "## Precision on a CPU with AMX" not in text


def test_deletion_baselines_table_shows_what_each_fill_removes_and_its_verdict(tmp_path):
    results = tmp_path / "results"
    row = {"gradcam_deletion_auc": 10.9, "random_deletion_auc": 10.8, "images_gradcam_better": 0, "p_value": 1.0}
    _write(
        results,
        "deletion_baselines",
        {
            "run_folder": "runs/bench/x",
            "settings": {"deletion_images": 32, "deletion_steps": 10, "random_maps": 5, "alpha": 0.05, "seed": 42},
            "models": [
                {
                    "condition": "pneumonia",
                    "profile": "standard",
                    "images": 32,
                    "map_shape": [4, 4],
                    "blur": {**row, "intact_logit": 11.9, "deleted_logit": 10.9, "better_than_random": False},
                    "mean": {
                        **row,
                        "gradcam_deletion_auc": 2.0,
                        "images_gradcam_better": 30,
                        "p_value": 1e-6,
                        "intact_logit": 11.9,
                        "deleted_logit": -3.0,
                        "better_than_random": True,
                    },
                }
            ],
        },
    )
    text = report.render(results)
    assert "| pneumonia standard | 4×4 | blur | 11.90 → 10.90 | 10.90 | 10.80 | 0/32 | 1 | not evidence |" in text
    assert "| pneumonia standard | 4×4 | mean | 11.90 → -3.00 | 2.00 | 10.80 | 30/32 | 1e-06 | beats random |" in text


def test_onednn_verbose_lines_and_tf_ops_are_classified():
    from bench.precision_profile import op_category, parse_onednn

    lines = [
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_1x1:avx512_core_bf16,forward_training,"
        "src:bf16::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,mb16_ic64oc128,0.25",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_1x1:avx512_core_bf16,forward_training,"
        "src:bf16,,,mb16,0.75",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16 dst:bf16,,,128x64x1x1,2.0",
        "onednn_verbose,v1,primitive,create:cache_miss,cpu,reorder,jit:uni,undef,src,,,1,9.0",
        "something else",
    ]
    parsed = parse_onednn(lines)
    assert parsed["total_ms"] == 3.0 and parsed["isas"] == ["avx512_core_bf16", "uni"]
    assert parsed["primitives"][0] == {
        "primitive": "reorder",
        "implementation": "jit:uni",
        "direction": "undef",
        "ms": 2.0,
        "calls": 1,
    }
    assert parsed["primitives"][1]["calls"] == 2
    assert op_category("densenet121/conv2_block1_1_conv/Conv2D", "_MklNativeConv2D") == "convolution"
    assert op_category("gradient_tape/densenet121/conv2_block1_0_bn/mul", "Mul") == "batch norm"
    assert op_category("densenet121/conv2_block1_0_bn/Cast", "Cast") == "cast"
    assert op_category("densenet121/conv2_block1_concat/concat", "ConcatV2") == "concatenation"
    assert op_category("adam/update", "AssignSubVariableOp") == "optimizer"
    assert op_category("__inference_train_function", "Process") is None


def test_profile_table_takes_the_executors_container_event_out_of_older_results():
    """Results from before the container was skipped counted `Process` (spanning every op) under "other"."""
    old = {
        "ms_by_category": {"convolution": 40.0, "batch norm": 40.0, "other": 120.0},
        "top_ops": [{"op": "Process", "ms": 100.0}, {"op": "Mul", "ms": 30.0}],
    }
    assert r_profile.op_ms_by_category(old) == {"convolution": 40.0, "batch norm": 40.0, "other": 20.0}
    new = {"ms_by_category": {"convolution": 40.0, "other": 20.0}, "top_ops": [{"op": "Mul", "ms": 20.0}]}
    assert r_profile.op_ms_by_category(new) == new["ms_by_category"]


def _night(
    i: int,
    mode: str,
    decision: str,
    challenger: float,
    before: float | None,
    after: float,
    cpu: float,
    delta: float | None = None,
    moved: int = 0,
) -> dict:
    condition = {
        "mode": mode,
        "decision": decision,
        "candidate": "standard",
        "challenger_test_auc": challenger,
        "champion_before_test_auc": before,
        "champion_after_test_auc": after,
        "paired_selection_delta": delta,
        "moved_since_last_night": moved,
        "moved_since_full_split": 0,
        "profiles": {"standard": {"test_interval": {"low": challenger - 0.02, "high": challenger + 0.02}}},
    }
    return {
        "night": i,
        "step": 0.55,
        "images": {"pneumonia": {"train": 100 * i, "val": 50, "test": 60}},
        "wall_seconds": 60.0 * cpu,
        "cpu_minutes": cpu,
        "conditions": {"pneumonia": condition},
    }


def _nights_result(retrain: list, cont: list, cpu: tuple[float, float], **fields) -> dict:
    """A nights result for pneumonia × standard at full scale with the two policies' nights, overridable."""
    return {
        "conditions": ["pneumonia"],
        "profiles": ["standard"],
        "fraction": 1.0,
        "margin": 0.02,
        "continue_epochs": 0.16,
        "policies": {
            "retrain": {"nights": retrain, "cpu_minutes": cpu[0], "wall_minutes": cpu[0]},
            "continue": {"nights": cont, "cpu_minutes": cpu[1], "wall_minutes": cpu[1]},
        },
        **fields,
    }


def test_nights_section_judges_the_targets_on_the_recorded_figures(tmp_path):
    """The nights table: per night cost, plan, decision and champion; the verdicts follow the figures."""
    results = tmp_path / "results"
    retrain = [
        _night(1, "retrain", "promoted", 0.90, None, 0.90, 10.0),
        _night(2, "retrain", "kept champion", 0.89, 0.90, 0.90, 11.0, delta=-0.01),
    ]
    cont = [
        _night(1, "retrain", "promoted", 0.90, None, 0.90, 10.0),
        _night(2, "continue", "promoted", 0.92, 0.90, 0.92, 4.0, delta=0.02, moved=1),
    ]
    _write(
        results,
        "nights",
        _nights_result(
            retrain, cont, (21.0, 14.0), command="bench/nights.py --fraction 0.1", epochs=2, steps=[0.55, 1.0]
        )
        | {"fraction": 0.1, "continue_epochs": 0.5},
    )
    text = report.render(results)
    assert "## Nights that build on each other" in text and "a keyed-hash 10% of each set's patients" in text
    assert "no image changed split: missed (1 moves)" in text
    assert "continue used 0.67× retrain's CPU minutes (target ≤ 0.5): missed" in text
    assert "pneumonia: continue's final champion 0.920 vs retrain's 0.900 (reached)" in text
    assert "more than the margin (0.02): met (worst paired difference +0.020)" in text

    paired = {"continue_auc": 0.91, "retrain_auc": 0.93, "delta": -0.02, "low": -0.05, "high": 0.01}
    paired |= {"n": 60, "n_positive": 30, "units": 40, "unit": "patient"}
    data = json.loads((results / "nights.json").read_text())
    _write(results, "nights", {**data, "final_paired": {"pneumonia": paired}})
    assert (
        "pneumonia: continue's final champion 0.910 vs retrain's 0.930 on the same 60 test images, continue − "
        "retrain -0.020 (-0.050 to +0.010, 40 patients resampled): below, but the interval spans 0"
        in report.render(results)
    )


def test_final_champions_are_compared_paired_on_the_same_test_images(tmp_path, monkeypatch):
    """The champion standing after the last night: a promoted challenger's own test predictions, else the champion
    as that night re-scored it; the two policies' finals are compared on the images both scored."""
    import numpy as np
    import pandas as pd

    from bench import nights
    from medcore.layout import RunLayout

    monkeypatch.setattr(nights, "ROOT", tmp_path)
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    test = pd.DataFrame({"relpath": [f"t/{i}.png" for i in range(60)], "label": labels, "group": np.arange(60) // 2})

    def probability(noise: float) -> np.ndarray:
        return 1 / (1 + np.exp(-(labels - 0.5 + rng.normal(0, noise, 60))))

    good = probability(0.6)  # retrain's promoted challenger
    stale, rescored = rng.random(60), probability(1.5)  # continue's rejected challenger; its champion re-scored
    policies = {}
    for policy, decision, own, champion in (
        ("retrain", "promoted", good, None),
        ("continue", "kept champion", stale, rescored),
    ):
        paths = RunLayout(tmp_path / policy, f"{policy}-night2").model("pneumonia", "standard")
        paths.root.mkdir(parents=True)
        test.assign(split="test", probability=own).to_csv(paths.predictions_csv, index=False)
        if champion is not None:
            test.assign(split="test", probability=champion)[["relpath", "split", "label", "probability"]].to_csv(
                paths.champion_predictions_csv, index=False
            )
        night = {"night": 2, "conditions": {"pneumonia": {"candidate": "standard", "decision": decision}}}
        policies[policy] = {"run_folder": policy, "nights": [{"night": 1}, night]}

    from sklearn.metrics import roc_auc_score

    result = nights.paired_finals(policies, 500, seed=0)["pneumonia"]
    assert result["retrain_auc"] == pytest.approx(roc_auc_score(labels, good))
    assert result["continue_auc"] == pytest.approx(roc_auc_score(labels, rescored))  # the champion, not the stale
    assert result["n"] == 60 and result["units"] == 30 and result["low"] <= result["delta"] <= result["high"]
    assert result["delta"] == pytest.approx(result["continue_auc"] - result["retrain_auc"])


def test_nights_stage_nested_train_images_and_every_val_and_test_image():
    """Each night holds every val and test image and the earlier night's train images (a keyed-hash order)."""
    import pandas as pd

    from bench.nights import night_rows

    split = pd.DataFrame(
        {
            "relpath": [f"{i}.png" for i in range(400)],
            "group": [f"p{i // 2}" for i in range(400)],
            "split": ["train"] * 300 + ["val"] * 50 + ["test"] * 50,
        }
    )
    nights = [set(night_rows(split, step, 1.0, 7)["relpath"]) for step in (0.55, 0.70, 0.85, 1.0)]
    held = set(split.loc[split["split"] != "train", "relpath"])
    assert all(held <= night for night in nights) and nights[-1] == set(split["relpath"])
    assert all(a < b for a, b in zip(nights, nights[1:]))
    assert 0.45 < (len(nights[0]) - 100) / 300 < 0.65
    small = night_rows(split, 1.0, 0.2, 7)
    assert 0.1 < len(small) / 400 < 0.3 and small.groupby("group")["relpath"].count().eq(2).all()


def _resize_variant(resize: str, auc: float, study_auc: float, kappa: float, failed: bool = False) -> dict:
    record = {
        "status": "failed" if failed else "succeeded",
        "failure": {"stage": "train", "error": "boom"} if failed else None,
        "resize": resize,
        "epochs_run": 6,
        "epochs_planned": 6,
        "early_stopped": False,
        "train_minutes": 3.5,
        "image": {"n": 259, "n_positive": 126, "roc_auc": auc, "interval": {"low": auc - 0.05, "high": auc + 0.05}},
        "study": {
            "n": 121,
            "n_positive": 60,
            "aggregation": "mean",
            "roc_auc": study_auc,
            "interval": {"low": study_auc - 0.06, "high": study_auc + 0.06},
            "kappa": kappa,
            "kappa_interval": {"low": kappa - 0.1, "high": kappa + 0.1},
        },
    }
    return {"wall_seconds": 420.0, "conditions": {"limb_abnormalities": record}}


def _paired(delta: float, low: float, high: float, n: int, unit: str) -> dict:
    return {"n": n, "n_positive": n // 2, "unit": unit, "units": 120, "delta": delta, "low": low, "high": high}


def test_resize_section_shows_both_variants_the_aspect_and_the_paired_difference(tmp_path):
    """Per variant figures with intervals, the images' aspect, and the paired difference read the right way."""
    results = tmp_path / "results"
    _write(
        results,
        "resize",
        {
            "command": "bench/resize.py --fraction 0.5",
            "conditions": ["limb_abnormalities"],
            "profile": "standard",
            "image_size": 128,
            "epochs": {"limb_abnormalities": 18},
            "fraction": 0.5,
            "variants": {
                "squash": _resize_variant("squash", 0.700, 0.720, 0.300),
                "pad": _resize_variant("pad", 0.750, 0.790, 0.420),
            },
            "aspect": {
                "limb_abnormalities": {
                    "images": 1502,
                    "read": 1502,
                    "unread": 0,
                    "width_over_height": {"mean": 0.83, "median": 0.8, "min": 0.42, "max": 1.93},
                    "square_within_5pct": 0.12,
                    "padding": 0.25,
                }
            },
            "paired": {
                "limb_abnormalities": {
                    "images_squash": 259,
                    "images_pad": 259,
                    "images_paired": 259,
                    "image": _paired(0.05, 0.01, 0.09, 259, "patient"),
                    "study": {**_paired(0.07, -0.01, 0.15, 121, "patient"), "aggregation": "mean"},
                }
            },
        },
    )
    text = report.render(results)
    assert "# Resize: squash against pad (aspect kept)" in text
    assert (
        "a keyed-hash 50% of each set's patients (reduced scale)" in text
        and "(128 px, limb_abnormalities 18 epochs)" in text
    )
    assert (
        "| limb_abnormalities | squash | 0.700 (0.650–0.750) | 0.720 (0.660–0.780) | 0.300 (0.200–0.400) | 6/6 |"
        in text
    )
    assert (
        "| limb_abnormalities | pad | 0.750 (0.700–0.800) | 0.790 (0.730–0.850) | 0.420 (0.320–0.520) | 6/6 |" in text
    )
    assert "mean 0.83, median 0.80, 0.42–1.93 (1,502 of 1,502 read); 12% within 5 % of square" in text
    assert "25% padding" in text
    assert "per image: +0.050 (+0.010 to +0.090) on the same 259 test images" in text and "pad better" in text
    assert "per study (mean of its images): +0.070 (-0.010 to +0.150)" in text
    assert "no difference shown (the interval spans 0)" in text
    assert "test splits differ" not in text and "not trained again" not in text


def test_resize_section_names_a_reused_variant_and_splits_that_differ(tmp_path):
    """A variant taken from another run says so, shows no wall time of its own, and unpaired images are counted."""
    results = tmp_path / "results"
    pad = {**_resize_variant("pad", 0.75, 0.79, 0.42), "reused": True, "wall_seconds": None}
    pad["run_folder"] = "runs/bench/nightly-x/runs/bench_nightly_x"
    _write(
        results,
        "resize",
        {
            "command": "bench/resize.py --reuse pad=runs/bench/nightly-x/runs/bench_nightly_x",
            "conditions": ["limb_abnormalities"],
            "profile": "standard",
            "image_size": 128,
            "epochs": {"limb_abnormalities": 18},
            "fraction": 1.0,
            "variants": {"squash": _resize_variant("squash", 0.70, 0.72, 0.30), "pad": pad},
            "aspect": {},
            "paired": {
                "limb_abnormalities": {
                    "images_squash": 259,
                    "images_pad": 300,
                    "images_paired": 250,
                    "image": _paired(0.05, 0.01, 0.09, 250, "patient"),
                }
            },
        },
    )
    text = report.render(results)
    assert "The `pad` models were not trained again: they are those of `runs/bench/nightly-x/" in text
    assert "| limb_abnormalities | pad | 0.750 (0.700–0.800) |" in text and "| 3.5 | reused |" in text
    assert "| limb_abnormalities | squash |" in text and "| 3.5 | 7.0 |" in text
    assert "only 250 of their 259 (squash) and 300 (pad) test images are paired below" in text


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("crop=runs/x", "VARIANT one of squash, pad"),
        ("pad=", "VARIANT one of squash, pad"),
        ("pad={missing}", "is not a run folder (it has no run.json)"),
    ],
)
def test_resize_bench_refuses_a_reuse_it_cannot_read(tmp_path, capsys, value, says):
    from bench import resize as bench_resize

    with pytest.raises(SystemExit) as exit_:
        bench_resize.main(["--reuse", value.format(missing=tmp_path / "nowhere")])
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_resize_section_flags_a_variant_that_trained_with_the_other_resize(tmp_path):
    """A training record that contradicts its variant is shown, not hidden; a failed variant says where."""
    results = tmp_path / "results"
    _write(
        results,
        "resize",
        {
            "command": "bench/resize.py",
            "conditions": ["limb_abnormalities"],
            "profile": "standard",
            "image_size": 128,
            "epochs": {"limb_abnormalities": 6},
            "fraction": 1.0,
            "variants": {
                "squash": _resize_variant("pad", 0.7, 0.7, 0.3),
                "pad": _resize_variant("pad", 0.7, 0.7, 0.3, failed=True),
            },
            "aspect": {},
            "paired": {"limb_abnormalities": None},
        },
    )
    text = report.render(results)
    assert "| limb_abnormalities | squash (trained with pad!) |" in text
    assert "| limb_abnormalities | pad | failed at train |" in text
    assert "limb_abnormalities: not compared" in text and "on the full sets" in text
    assert "(128 px, limb_abnormalities 6 epochs)" in text


def _non_square_limb(data: Path) -> None:
    """Make the synthetic humerus films 2:1 landscape and 1:2 portrait in turn, as real films vary."""
    import cv2

    for i, png in enumerate(sorted((data / "limb" / "images").rglob("*.png"))):
        image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        size = (40, 20) if i % 2 else (20, 40)  # (width, height)
        assert cv2.imwrite(str(png), cv2.resize(image, size, interpolation=cv2.INTER_AREA))


@pytest.mark.slow
@pytest.mark.bench
def test_resize_bench_trains_both_variants_and_pairs_them_on_the_same_studies(
    tmp_path, demo_data, tiny_config, monkeypatch
):
    """Both variants run through `medcore run` with the resize they claim; the paired figures match evaluation's."""
    import shutil

    from bench import common
    from bench import resize as bench_resize
    from medcore.layout import RunLayout
    from medcore.model.contract import contract_resize

    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    (data / "README.md").write_text("synthetic stand-in for the real sets\n")
    _non_square_limb(data)
    monkeypatch.setenv("MEDCORE_DATA_ROOT", str(data))
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "ROOT", tmp_path)  # bench_workdir: runs/bench/ under the test's folder

    argv = ["--config", str(tiny_config), "--epochs", "1", "--fraction", "0.8", "--name", "resize"]
    assert bench_resize.main(argv) == 0

    result = json.loads((tmp_path / "results" / "resize.json").read_text())
    assert result["complete"] and result["conditions"] == ["limb_abnormalities"]
    assert result["epochs"] == {"limb_abnormalities": 1}
    for variant in ("squash", "pad"):
        record = result["variants"][variant]
        assert record["exit"] == 0
        limb = record["conditions"]["limb_abnormalities"]
        assert limb["status"] == "succeeded" and limb["epochs_run"] == 1
        assert limb["resize"] == variant  # conditions.yaml says pad: the squash run proves the override
        run_root = (ROOT / record["run_folder"]).resolve()
        model = RunLayout(run_root.parent, run_root.name).model("limb_abnormalities", "standard")
        assert contract_resize(model.model) == variant  # what Grad-CAM and `medcore predict` will use
        assert limb["study"]["n"] < limb["image"]["n"]  # studies hold two images each
    aspect = result["aspect"]["limb_abnormalities"]
    listed = len((data / "limb" / "labels.csv").read_text().splitlines()) - 1
    assert 0 < aspect["images"] < listed  # --fraction kept a share of the patients, staged apart from the set
    assert not any((tmp_path / "runs" / "bench").glob("resize-*/data"))
    assert aspect["width_over_height"]["min"] == 0.5 and aspect["width_over_height"]["max"] == 2.0
    assert aspect["padding"] == pytest.approx(0.5) and aspect["square_within_5pct"] == 0.0
    paired = result["paired"]["limb_abnormalities"]
    assert paired["images_paired"] == paired["images_squash"] == paired["images_pad"]
    for unit in ("image", "study"):
        for variant in ("squash", "pad"):
            recorded = result["variants"][variant]["conditions"]["limb_abnormalities"][unit]
            assert paired[unit][f"{variant}_auc"] == pytest.approx(recorded["roc_auc"])
            assert paired[unit]["n"] == recorded["n"]
    assert paired["study"]["low"] <= paired["study"]["delta"] <= paired["study"]["high"]
    text = report.render(tmp_path / "results")
    assert "| limb_abnormalities | squash |" in text and "| limb_abnormalities | pad |" in text

    # Both variants again, reused from the run above: nothing trains, and the pairing is the same one.
    reuse = [f"{v}={(ROOT / result['variants'][v]['run_folder']).resolve()}" for v in ("squash", "pad")]
    argv = ["--config", str(tiny_config), "--name", "resize_reused"] + [f"--reuse={r}" for r in reuse]
    assert bench_resize.main(argv) == 0
    again = json.loads((tmp_path / "results" / "resize_reused.json").read_text())
    assert again["complete"] and all(again["variants"][v]["reused"] for v in ("squash", "pad"))
    assert again["variants"]["pad"]["conditions"] == result["variants"]["pad"]["conditions"]
    assert again["paired"]["limb_abnormalities"]["study"] == paired["study"]


def _pair_side(rate: float, epoch: float, callbacks: float | None = None) -> dict:
    row = {
        "images_per_second": rate,
        "epoch_seconds": [40.0, epoch, epoch],
        "train_seconds": [30.0, epoch - 1.0, epoch - 1.0],
        "validation_seconds": [2.0, 0.5, 0.5],
    }
    if callbacks is not None:
        row["callbacks_seconds"] = [0.4, callbacks, callbacks]
    return row


def _pairs_size(ratios: list[float], plain: float = 20.0) -> dict:
    """A size of train_pairs.json whose pairs have these ratios (pipeline first in even pairs)."""
    from bench.train_pairs import summarise_pairs

    pairs = [
        {
            "order": ["pipeline", "plain"] if i % 2 == 0 else ["plain", "pipeline"],
            "pipeline": _pair_side(plain * r, 256 / (plain * r), callbacks=0.5),
            "plain": _pair_side(plain, 256 / plain),
            "ratio": r,
            # plain's train steps (11.8 s) over the pipeline's (its epoch less 1 s)
            "train_ratio": (256 / plain - 1) / (256 / (plain * r) - 1),
        }
        for i, r in enumerate(ratios)
    ]
    return {"images": 256, "mode": "mixed_bfloat16", "fused_batch_norm": True, **summarise_pairs(pairs)}


def test_pairs_table_judges_the_cpu_ratio_apart_from_the_wall_clock_one():
    """Noisy wall clocks with steady CPU seconds: the wall verdict stays open, the per-CPU one decides."""
    from bench.train_pairs import summarise_pairs

    def side(images: int, wall: float, cpu: float) -> dict:
        row = _pair_side(images / wall, wall)
        row.update(images=images, cpu_seconds=[50.0, cpu, cpu], machine_idle=[0.1] * 3, machine_steal=[0.0] * 3)
        return row

    pairs = []
    for i, (wall_pipe, cpu_pipe) in enumerate([(10.0, 10.2), (16.0, 10.3), (10.1, 10.1), (9.0, 10.4)]):
        pipe, plain = side(256, wall_pipe, cpu_pipe), side(256, 10.0, 10.0)
        pairs.append(
            {
                "order": ["pipeline", "plain"] if i % 2 == 0 else ["plain", "pipeline"],
                "pipeline": pipe,
                "plain": plain,
                "ratio": pipe["images_per_second"] / plain["images_per_second"],
                "cpu_ratio": 10.0 / cpu_pipe,
            }
        )
    size = {"images": 256, "mode": "mixed_bfloat16", "fused_batch_norm": True, **summarise_pairs(pairs)}
    assert size["cpu_ratio_min"] == pytest.approx(10 / 10.4) and size["cpu_ratio_max"] == pytest.approx(10 / 10.1)
    assert size["pipeline"]["images_per_cpu_second"] == pytest.approx((256 / 10.2 + 256 / 10.3) / 2)
    payload = {"command": "x", "pairs": 4, "epochs": 3, "shipped_sizes": [128, 160], "sizes": {"128": size}}
    table = r_pairs.pairs_table(payload)
    assert "| **0.995** (0.625–1.111) | 4 | noise exceeds the margin |" in table
    assert "| 128 px | 25.0 | 25.6 | **0.976** (0.962–0.990) | met | 102% / 100% | 10% | 0.0% |" in table
    assert "Per CPU-second, pipeline / plain ≥ 0.95: **128 px met; 160 px not measured**." in table
    # Results from before the CPU stamps have no per-CPU table at all.
    del payload["sizes"]["128"]["cpu_ratio"]
    assert "per CPU-second" not in r_pairs.pairs_table(payload)


@pytest.mark.parametrize(
    ("low", "high", "pairs", "verdict"),
    [
        (0.95, 0.99, 5, "met"),
        (0.80, 0.949, 5, "missed"),
        (0.93, 0.97, 5, "noise exceeds the margin"),
        (0.90, 0.95, 5, "noise exceeds the margin"),
        (0.99, 0.99, 1, "not judged (one pair has no spread)"),
    ],
)
def test_pair_verdict_needs_the_whole_spread_on_one_side_of_the_target(low, high, pairs, verdict):
    """Met or missed only when every pair ratio is on the same side of 0.95; one pair is never judged."""
    assert r_pairs.pair_verdict(low, high, pairs) == verdict


def test_pairs_table_states_median_spread_pairs_and_an_honest_verdict(tmp_path):
    """Per size the median ratio with its spread, both sides' img/s and the epoch split; the verdict follows them."""
    results = tmp_path / "results"
    payload = {
        "command": "bench/train_throughput.py --pairs 4",
        "pairs": 4,
        "epochs": 3,
        "primitive_cache_capacity": None,
        "shipped_sizes": [128, 160],
        "load_before": [0.1, 0.2, 0.3],
        "load_after": [2.0, 1.5, 1.0],
        "wall_seconds": 3000.0,
        "sizes": {"128": _pairs_size([0.96, 0.97, 0.99, 0.98]), "160": _pairs_size([0.93, 0.96, 0.94, 0.97])},
    }
    _write(results, "train_pairs", payload)
    text = report.render(results)
    assert "## Training: the pipeline against plain Keras, in pairs of fresh processes" in text
    assert (
        "| 128 px | `mixed_bfloat16` + fused BN | 256 × 3 | 19.5 (19.2–19.8) | 20.0 (20.0–20.0) "
        "| **0.975** (0.960–0.990) | 4 | met | 0.973 (0.957–0.989) | 13.1: 12.1 + 0.5 + 0.5 | 12.8: 11.8 + 0.5 |"
        in text
    )
    assert "| **0.950** (0.930–0.970) | 4 | noise exceeds the margin |" in text
    assert "at every shipped size (128 px, 160 px): **not shown: 160 px**" in text
    assert "160 px pipeline first 0.935 / plain first 0.965" in text
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY: unset (oneDNN's default, 1024)" in text
    assert "Threads per run: TensorFlow's default pools (every core)." in text
    assert "plain `model.fit` on in-memory tensors, in turn." in text

    # One shipped size wholly below the target is a miss, whatever the other does; a size left out is not met.
    payload["sizes"]["160"] = _pairs_size([0.90, 0.93, 0.94, 0.91])
    payload["primitive_cache_capacity"] = "4096"
    payload["threads"], payload["together"] = 1, True
    _write(results, "train_pairs_cache4096", payload)
    del payload["sizes"]["160"]
    _write(results, "train_pairs", payload)
    text = report.render(results)
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY: 4096." in text
    assert "**not shown: 160 px (not measured)**" in text
    threads = "Threads per run: 1 (`MEDCORE_THREADS`, as a task holding 1 `training` pool slot(s) gets in a night)."
    assert threads in text and "side by side, as two one-slot trainings in a night" in text
    payload["inter_threads"] = 1
    _write(results, "train_pairs", payload)
    assert "gets in a night), inter-op 1 (`MEDCORE_INTER_THREADS`)." in report.render(results)


def test_epoch_cpu_spans_epoch_starts_and_reads_idle_and_steal_from_proc_stat():
    """Each epoch's CPU runs to the next epoch's start (the last to train end); idle counts iowait too."""
    from bench.train_pairs import epoch_cpu

    # /proc/stat order: user nice system idle iowait irq softirq steal
    stamps = [
        {"begin": 0.0, "cpu": 1.0, "jiffies": [0, 0, 0, 0, 0, 0, 0, 0]},
        {"begin": 5.0, "cpu": 4.0, "jiffies": [50, 0, 10, 20, 10, 0, 0, 10]},
    ]
    finished = {"end": 9.0, "cpu": 6.5, "jiffies": [100, 0, 20, 20, 10, 0, 0, 50]}
    out = epoch_cpu(stamps, finished)
    assert out["cpu_seconds"] == [pytest.approx(3.0), pytest.approx(2.5)]
    assert out["machine_idle"] == [pytest.approx(0.3), 0.0]
    assert out["machine_steal"] == [pytest.approx(0.1), pytest.approx(40 / 100)]
    # Results written before CPU stamps existed give nothing rather than wrong figures.
    assert epoch_cpu([{"begin": 0.0, "end": 1.0}], {}) == {"cpu_seconds": [], "machine_idle": [], "machine_steal": []}


def test_epoch_parts_split_an_epoch_at_validation_and_at_the_timer():
    """Train, validation and the callbacks after the timer add up to the pipeline's own epoch clock."""
    from bench.train_pairs import epoch_parts

    stamps = [{"begin": 10.0, "test_begin": 17.0, "test_end": 18.5, "end": 18.6}]
    assert epoch_parts(stamps, [9.6]) == {
        "train_seconds": [7.0],
        "validation_seconds": [1.5],
        "callbacks_seconds": [pytest.approx(1.0)],
    }
    # Without validation the whole span is training; without the pipeline's clock there is no callback share.
    assert epoch_parts([{"begin": 0.0, "end": 5.0}]) == {
        "train_seconds": [5.0],
        "validation_seconds": [0.0],
        "callbacks_seconds": [None],
    }


@pytest.mark.slow
@pytest.mark.bench
def test_paired_mode_runs_each_side_in_its_own_process_in_alternating_order(tmp_path, demo_data, monkeypatch):  # noqa: PLR0915 one scenario, asserted step by step
    """Two pairs on 32 px phantoms: fresh processes, ABBA order, same images, ratios of the same pair's runs."""
    from bench import common
    from bench import train_throughput as tt
    from medcore.model.compute import choose_precision

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    argv = ["--pairs", "2", "--pair-sizes", "32", "--images", "16", "--pair-epochs", "2"]
    # Eager: each of the four workers would otherwise spend most of its time tracing DenseNet's graph.
    argv += ["--data-root", str(demo_data), "--primitive-cache", "2048", "--out", "pairs_test", "--execution", "eager"]
    argv += ["--pair-threads", "1"]  # as a one-slot task in the night: every worker gets one thread
    tt.main(argv)

    result = json.loads((tmp_path / "results" / "pairs_test.json").read_text())
    assert result["primitive_cache_capacity"] == "2048" and result["shipped_sizes"] == [128, 160]
    assert result["execution"] == "eager" and result["threads"] == 1
    row = result["sizes"]["32"]
    pairs = row["pairs"]
    assert [p["order"] for p in pairs] == [["pipeline", "plain"], ["plain", "pipeline"]]
    runs = [p[side] for p in pairs for side in p["order"]]
    starts = [r["started_at_seconds"] for r in runs]
    assert starts == sorted(starts)  # run one after another, in the order recorded
    assert len({r["pid"] for r in runs}) == 4 and os.getpid() not in {r["pid"] for r in runs}
    mode = choose_precision("auto")["mode"]
    for run in runs:
        assert run["primitive_cache_capacity"] == "2048"
        assert run["mode"] == mode and run["images"] == row["images"] == 16
        assert len(run["epoch_seconds"]) == 2
        assert run["images_per_second"] == pytest.approx(16 / run["epoch_seconds"][1])
        assert all(v > 0 for v in run["validation_seconds"])
        for epoch, train, val in zip(run["epoch_seconds"], run["train_seconds"], run["validation_seconds"]):
            assert train + val <= epoch + 1e-6
        # CPU seconds per epoch, each from the process's own clock, and the machine's shares beside them.
        assert len(run["cpu_seconds"]) == 2 and all(c > 0 for c in run["cpu_seconds"])
        assert all(0 <= v <= 1 for v in run["machine_idle"] + run["machine_steal"])
    assert len({r["split"] for r in runs}) == 1  # every run trained on the same files
    for pair in pairs:
        pipe, plain = pair["pipeline"], pair["plain"]
        assert pair["ratio"] == pytest.approx(pipe["images_per_second"] / plain["images_per_second"])
        assert pair["train_ratio"] == pytest.approx(plain["train_seconds"][1] / pipe["train_seconds"][1])
        assert pair["cpu_ratio"] == pytest.approx(plain["cpu_seconds"][1] / pipe["cpu_seconds"][1])
        # Both sides in the precision `auto` resolves to, with the profile's fused batch norm default (on).
        assert pipe["compute"]["precision"]["mode"] == mode
        assert pipe["compute"]["fused_batch_norm"] is plain["fused_batch_norm"] is row["fused_batch_norm"] is True
        assert plain["threads"] == pipe["compute"]["threads"] == {"intra_op": 1, "inter_op": 2}
        # The pipeline checkpoints every epoch after the timer; the plain fit has nothing after it.
        assert all(c > 0 for c in pipe["callbacks_seconds"]) and "callbacks_seconds" not in plain
    ratios = [p["ratio"] for p in pairs]
    assert row["ratio"] == pytest.approx(sum(ratios) / 2)
    assert (row["ratio_min"], row["ratio_max"]) == (min(ratios), max(ratios))
    assert "| 32 px | `" in r_pairs.pairs_table(result, "pairs_test")

    # --pair-together: both sides of a pair start at once and overlap, so load that comes and goes hits both.
    argv[argv.index("--pairs") + 1] = "1"
    argv[argv.index("--out") + 1] = "pairs_together"
    tt.main([*argv, "--pair-together"])
    together = json.loads((tmp_path / "results" / "pairs_together.json").read_text())
    assert together["together"] is True and together["threads"] == 1
    (pair,) = together["sizes"]["32"]["pairs"]
    pipe, plain = pair["pipeline"], pair["plain"]
    assert pair["together"] is True and pipe["started_at_seconds"] == plain["started_at_seconds"]
    assert pipe["pid"] != plain["pid"]
    assert max(pipe["lived"][0], plain["lived"][0]) < min(pipe["lived"][1], plain["lived"][1])  # they overlapped
    assert "side by side, as two one-slot trainings in a night" in r_pairs.pairs_table(together, "pairs_together")


def test_cpu_sampler_reports_steal_and_services_their_own_cpu(tmp_path):
    """Steal is a share of all CPU time; a process's CPU seconds grow while it computes and end with it."""
    import subprocess
    import time

    from bench.common import CpuSampler, process_cpu_seconds

    sampler = CpuSampler()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while (process_cpu_seconds(child.pid) or 0) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 0.25 <= process_cpu_seconds(child.pid) < 5
    finally:
        child.kill()
        child.wait()
    assert process_cpu_seconds(child.pid) is None
    assert 0.0 <= sampler.steal() <= 1.0 and 0.0 < sampler.busy() <= 1.0


@pytest.mark.slow
@pytest.mark.bench
def test_deletion_baselines_rerun_the_stage_test_on_a_saved_model_once_per_fill(tmp_path):
    """Same images and seed as the Grad-CAM stage, one test per fill; the blur figures equal the stage's own."""
    import cv2
    import numpy as np
    import pandas as pd

    from bench.deletion_baselines import baseline_figures
    from medcore.assess.evaluation import load_model
    from medcore.assess.gradcam import GradCam, deletion_inputs, faithfulness
    from medcore.config import GradcamSettings
    from medcore.data.datasets import load_images
    from medcore.layout import ModelLayout
    from tests.assess.test_gradcam import _phantom_cnn, _phantoms

    images, labels = _phantoms(0, 160, 64)
    model = _phantom_cnn(64, seed=0)
    model.fit(images, labels.astype(np.float32), batch_size=16, epochs=6, verbose=0)
    paths = ModelLayout(tmp_path / "pneumonia" / "standard", "pneumonia", "standard")
    paths.root.mkdir(parents=True)
    model.save(paths.model)
    test_images, test_labels = _phantoms(1, 24, 64)
    files = [tmp_path / f"{i}.png" for i in range(len(test_images))]
    for path, image in zip(files, test_images, strict=True):
        cv2.imwrite(str(path), image[..., 0].astype(np.uint8))
    logits = model.predict(load_images(files, 64), verbose=0).ravel()
    probability = 1 / (1 + np.exp(-logits))
    pd.DataFrame(
        {"path": map(str, files), "label": test_labels, "probability": probability, "predicted": probability > 0.5}
    ).to_csv(paths.predictions_csv, index=False)
    settings = GradcamSettings(deletion_images=12, deletion_steps=5, deletion_random_maps=3, seed=0)

    figures = baseline_figures(paths, settings, ["blur", "mean"])

    assert figures["images"] == 12 and set(figures) >= {"blur", "mean"}
    explainer = GradCam(load_model(paths.model), settings.layer, settings.batch_size)
    _, chosen, maps, _ = deletion_inputs(explainer, pd.read_csv(paths.predictions_csv), settings, "squash")
    stage = faithfulness(explainer, chosen, maps, steps=5, baseline="blur", seed=settings.seed, random_maps_per_image=3)
    for key in ("gradcam_deletion_auc", "random_deletion_auc", "p_value"):
        assert figures["blur"][key] == pytest.approx(stage[key])
    assert figures["blur"]["intact_logit"] == pytest.approx(figures["mean"]["intact_logit"])
    assert figures["blur"]["deleted_logit"] != pytest.approx(figures["mean"]["deleted_logit"])


def test_a_seeded_config_changes_the_seed_and_nothing_else(tmp_path):
    """`bench/nights.py --seed`: the nights' configs extend one that differs from the base in its seed alone,
    so the drawn val split, the arrival order and training's draws change and the profiles do not."""
    import dataclasses

    from bench.nights import seeded_config
    from medcore.config import load_config

    base = load_config(ROOT / "conditions.yaml")
    seeded = load_config(seeded_config(ROOT / "conditions.yaml", base.seed + 1, tmp_path / "run"))
    assert seeded.seed == seeded.gradcam.seed == base.seed + 1
    # The registry's root is relative to the file loaded; the nights set theirs in the environment.
    assert dataclasses.replace(seeded.registry, root=base.registry.root) == base.registry
    same = {f.name for f in dataclasses.fields(base)} - {"seed", "gradcam", "registry", "path"}
    assert {name: getattr(seeded, name) for name in same} == {name: getattr(base, name) for name in same}


def test_the_seeds_section_lists_each_pair_of_chains_and_the_spread_of_their_differences(tmp_path):
    """One row per seed and condition from nights.json and every nights_seed*.json; the summary counts the seeds
    where continue ended below retrain, whatever a single seed's interval said."""
    results = tmp_path / "results"
    retrain = [_night(1, "retrain", "promoted", 0.90, None, 0.90, 10.0)]
    cont = [_night(1, "retrain", "promoted", 0.90, None, 0.90, 4.0)]

    def run(seed: int | None, delta: float, low: float, high: float) -> dict:
        paired = {"continue_auc": 0.93 + delta, "retrain_auc": 0.93, "delta": delta, "low": low, "high": high}
        return _nights_result(retrain, cont, (20.0, 9.0), command="bench/nights.py", steps=[1.0]) | {
            **({"seed": seed} if seed is not None else {}),
            "final_paired": {"pneumonia": paired | {"n": 60, "n_positive": 30, "units": 40, "unit": "patient"}},
        }

    _write(results, "nights", run(None, -0.02, -0.033, -0.010))
    assert "### The same nights with other seeds" not in report.render(results)
    _write(results, "nights_seed7", run(7, 0.004, -0.010, 0.018))
    _write(results, "nights_seed42", run(42, -0.006, -0.020, 0.008))
    text = report.render(results)
    assert "### The same nights with other seeds" in text
    assert (
        "- pneumonia at 100% scale: over 3 seeds continue − retrain averaged -0.007 "
        "(95 % t interval over seeds -0.037 to +0.023; from -0.020 to +0.004); continue below retrain in 2 of 3" in text
    )
    _write(results, "nights_seed9", {**run(9, 0.01, -0.004, 0.024), "retrain_last_night_only": True})
    _write(results, "nights_reduced", {**run(None, -0.07, -0.12, -0.03), "fraction": 0.3})
    text = report.render(results)
    assert "at 100% scale: over 4 seeds" in text and "continue below retrain in 2 of 4" in text
    assert "at 30% scale" not in text  # one seed there: no spread


def test_merge_takes_retrain_run_for_only_the_last_night_and_nothing_else_that_differs(tmp_path, monkeypatch):
    """`--merge` pairs a continue chain with retrain's last night alone (flagged, so no CPU ratio is claimed), and
    refuses a retrain run of any other night, or runs that differ in anything else."""
    from bench import common, nights

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(nights, "ROOT", tmp_path)
    base = {"conditions": ["pneumonia"], "profiles": ["standard"], "fraction": 1.0, "margin": 0.02, "seed": 7}

    def part(name: str, policy: str, steps: list[float], **extra) -> Path:
        path = tmp_path / f"{name}.json"
        record = {"nights": [{"night": i + 1} for i in range(len(steps))], "cpu_minutes": 1.0}
        payload = {**base, **extra, "steps": steps, "command": name, "complete": False}
        path.write_text(json.dumps({**payload, "policies": {policy: record}}))
        return path

    chain = part("continue", "continue", [0.55, 0.7, 0.85, 1.0])
    assert nights.merge([chain, part("last", "retrain", [1.0])], "paired") == 0
    merged = json.loads((tmp_path / "results" / "paired.json").read_text())
    assert merged["retrain_last_night_only"] and merged["steps"] == [0.55, 0.7, 0.85, 1.0]
    assert set(merged["policies"]) == {"retrain", "continue"}
    assert nights.merge([chain, part("full", "retrain", [0.55, 0.7, 0.85, 1.0])], "full") == 0
    assert not json.loads((tmp_path / "results" / "full.json").read_text())["retrain_last_night_only"]
    with pytest.raises(SystemExit, match="differ in steps"):
        nights.merge([chain, part("third", "retrain", [0.85])], "bad")
    with pytest.raises(SystemExit, match="differ in steps"):
        nights.merge([chain, part("both", "continue", [1.0])], "bad")
    with pytest.raises(SystemExit, match="differ in steps, seed"):
        nights.merge([chain, part("seed", "retrain", [1.0], seed=8)], "bad")


def test_merge_keeps_the_conditions_both_runs_measured_only_when_no_cpu_ratio_is_claimed(tmp_path, monkeypatch):
    """A pneumonia-only continue chain pairs with a retrain last night of two conditions on pneumonia alone; two
    full chains of different conditions would compare CPU minutes of different work, so they are refused."""
    from bench import common, nights

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(nights, "ROOT", tmp_path)
    base = {"profiles": ["standard"], "fraction": 1.0, "margin": 0.02, "seed": 42, "complete": False}

    def part(name: str, policy: str, steps: list[float], conditions: list[str]) -> Path:
        nights_ = [
            {"night": i + 1, "conditions": {c: {"decision": "promoted"} for c in conditions}} for i in range(len(steps))
        ]
        payload = {**base, "conditions": conditions, "steps": steps, "command": name}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**payload, "policies": {policy: {"nights": nights_, "cpu_minutes": 1.0}}}))
        return path

    chain = part("continue", "continue", [0.55, 0.7, 0.85, 1.0], ["pneumonia"])
    assert nights.merge([chain, part("last", "retrain", [1.0], ["pneumonia", "cardiomegaly"])], "paired") == 0
    merged = json.loads((tmp_path / "results" / "paired.json").read_text())
    assert merged["conditions"] == ["pneumonia"] and merged["retrain_last_night_only"]
    assert list(merged["policies"]["retrain"]["nights"][0]["conditions"]) == ["pneumonia"]
    full = part("full", "retrain", [0.55, 0.7, 0.85, 1.0], ["pneumonia", "cardiomegaly"])
    with pytest.raises(SystemExit, match="differ in conditions"):
        nights.merge([chain, full], "bad")
    with pytest.raises(SystemExit, match="differ in conditions"):
        nights.merge([chain, part("other", "retrain", [1.0], ["limb"])], "bad")


def test_machines_that_share_a_name_are_told_apart_by_family_and_model():
    """Two CPUs the hypervisor calls "AMD EPYC" get a line each, with the family and model read from cpuinfo."""
    here = machine()
    if Path("/proc/cpuinfo").exists() and "cpu family" in Path("/proc/cpuinfo").read_text():
        assert here["cpu_id"].startswith("family ") and " model " in here["cpu_id"]
    old = {**here, "cpu": "AMD EPYC", "cpu_id": None, "flags": ["avx2", "fma"]}
    new = {**old, "cpu_id": "family 23 model 1 stepping 2"}
    lines = r_profile.machine_lines({"a": {"machine": old}, "b": {"machine": new}})
    assert len(lines) == 2 and lines[1].startswith("- **Machines**: AMD EPYC (family 23 model 1 stepping 2), ")
    assert lines[0].startswith("- **Machines**: AMD EPYC, ") and lines[1].endswith("measured here: b")


@pytest.mark.skipif(not (ROOT / "bench" / "results" / "nightly.json").exists(), reason="recorded nights absent")
def test_night_cost_gives_each_cpu_kind_a_row_and_fits_the_avx2_nights(tmp_path, capsys):
    """bench/night_cost.py from the recorded nights: the bf16 rows keep the full plan, the AVX2 rows are fitted into
    240 min with their cuts named, and docs/benchmarks/nights.md renders every row and backtest."""
    from bench import night_cost

    assert night_cost.main(["--out", str(tmp_path / "nc")]) == 0
    result = json.loads((tmp_path / "nc.json").read_text())
    rows = {r["cpu"].split(",")[-1].strip(): r for r in result["rows"]}
    assert {"AMX", "AVX512-BF16", "AVX2"} <= set(rows)
    for row in result["rows"]:
        assert row["source"] and row["planned_for_240"] <= 240
        if "AVX2" in row["cpu"]:
            assert row["full_night_predicted"] > 240 and row["cuts"] and row["full_night_measured"] is None
        else:
            assert row["cuts"] == [] and abs(row["full_night_predicted"] / row["full_night_measured"] - 1) <= 0.2
    section = r_night.night_cost_tables(result)
    assert "| AMD EPYC (family 23 model 1 stepping 2), AVX2 |" in section
    measured = [n for n in night_cost.AVX2_NIGHTS if (night_cost.RESULTS / n).is_file()]
    for name in measured:  # each real AVX2 night: the shipped night at its speed, and a leave-one-out backtest
        machine = json.loads((night_cost.RESULTS / name).read_text())["machine"]
        assert f"| AMD EPYC ({machine['cpu_id']}), AVX2 | {name} |" in section
        assert any(t["night"] == name for t in result["backtests"])
    assert "from nightly.json (the evening before)" in section


def test_the_summary_asks_whether_each_budgeted_night_fits_on_its_cpu(tmp_path):
    """Every result with a `night` block gets a row: CPU family/model, budget, planned, took, error, worst chain."""
    results = tmp_path / "results"

    def budgeted(name: str, cpu_id: str, flags: list[str], took: float, chains: list[tuple[str, float, float]]) -> None:
        night = {
            "budget_minutes": 95.0,
            "planned_minutes": 93.9,
            "took_minutes": took,
            "chains": [
                {"label": label, "predicted_minutes": p, "actual_minutes": a, "error": p / a - 1}
                for label, p, a in chains
            ],
        }
        m = {**machine(), "cpu": "AMD EPYC", "cpu_id": cpu_id, "flags": flags, "date": "2026-12-07T08:44:52+00:00"}
        _write(results, name, {"machine": m, "night": night})

    budgeted("avx2_standard_b95", "family 23 model 49 stepping 0", ["avx2", "fma"], 106.5, [("a/standard", 5.0, 20.0)])
    budgeted("avx2emu_standard_b60", "family 26 model 2 stepping 1", ["avx2"], 90.0, [("b/standard", 11.0, 10.0)])
    _write(results, "shortcut_probes", {"night": "bench_nightly_x"})  # a `night` that is no budgeted night

    text = report.render_pages(results)["BENCHMARKS.md"]
    section = text.split("## Does the night fit its budget, per CPU kind?")[1].split("##")[0]
    assert (
        "| `avx2_standard_b95` | AMD EPYC family 23 model 49, AVX2 | 2026-12-07 | 95 min | 93.9 min | 106.5 min "
        "| -11.8% | a/standard -75.0% |" in section
    )
    assert (
        "| `avx2emu_standard_b60` | AMD EPYC family 26 model 2, AVX2 |" in section and "b/standard +10.0% |" in section
    )
    assert "shortcut_probes" not in section
