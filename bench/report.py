"""Regenerate BENCHMARKS.md from the raw results in bench/results/*.json, without retraining anything.

Usage: .venv/bin/python bench/report.py [--results bench/results] [--out BENCHMARKS.md]

Each table is drawn from one JSON file written by one benchmark; a missing file gives a line
saying which command makes it, not an empty table. Hand-written reading of the figures lives in
bench/notes.md and is copied in as it is, so regenerating never loses it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Test ROC AUC each condition should reach on 2 cores without pretrained weights (issue 17; limb per study).
TARGETS = {"pneumonia": 0.96, "cardiomegaly": 0.89, "knee_osteoarthritis": 0.88, "limb_abnormalities": 0.80}

# Published figures for the same original data, as ../shared/datasets/README.md quotes them.
REFERENCES = {
    "pneumonia": "Kermany et al. 2018 (Cell), their test set: AUC 0.968, acc 0.928, sens 0.932, spec 0.901 "
    "(full-resolution images, ImageNet-pretrained)",
    "cardiomegaly": "this exact 128 px Kaggle set, source repo README: AUC 0.87, acc 0.78; full NIH data: "
    "Wang et al. 2017 AUC 0.810, CheXNet AUC 0.925",
    "knee_osteoarthritis": "Tiulpin et al. 2018 (Sci Rep), radiographic OA (KL >= 2): AUC 0.93 "
    "(trained on MOST, tested on 5,960 OAI knees)",
    "knee_osteoporosis": "Wani & Arora 2023: acc 0.911, three classes, 381-image set (relation to this set "
    "not confirmed)",
    "limb_abnormalities": "MURA (Rajpurkar et al. 2017), DenseNet-169, all body parts: AUC 0.929, sens 0.815, "
    "spec 0.887",
}

MAKES = {
    "nightly": "`make bench` (or `.venv/bin/python bench/nightly.py`)",
    "train_throughput": "`.venv/bin/python bench/train_throughput.py`",
    "train_pairs": "`make bench` (or `.venv/bin/python bench/train_throughput.py --pairs 5 --pair-threads 1 --pair-together`)",
    "stages_speed": "`.venv/bin/python bench/gradcam_speed.py`",
    "validate_speed": "`.venv/bin/python bench/validate_speed.py`",
    "overhead": "`.venv/bin/python bench/overhead.py`",
    "peak": "`.venv/bin/python bench/peak.py`",
    "precision_profile": "`.venv/bin/python bench/precision_profile.py`",
    # The same three measurements on a CPU with AMX (machines of this kind differ; each keeps its own files).
    "peak_amx": "`.venv/bin/python bench/peak.py --out peak_amx` on a CPU with AMX",
    "precision_profile_amx": "`.venv/bin/python bench/precision_profile.py --out precision_profile_amx` on a CPU with AMX",
    "train_throughput_amx": "`.venv/bin/python bench/train_throughput.py --out train_throughput_amx` on a CPU with AMX",
    "nightly_shared": "`make bench` (`medcore pretrain`, then `bench/nightly.py --config configs/shared-backbone.yaml "
    "--shared-backbone <its registry>/shared_backbone.keras --name nightly_shared`)",
    "nights": "`make bench` (or `.venv/bin/python bench/nights.py`)",
    "deletion_baselines": "`make bench` (or `.venv/bin/python bench/deletion_baselines.py`, after a night)",
    "resize": "`make bench` (or `.venv/bin/python bench/resize.py`)",
    "nightly_following": "`make bench` (or `.venv/bin/python bench/nightly.py --config configs/following-night.yaml "
    "--after bench/results/nightly.json --name nightly_following`)",
}

# Issue 17's budget on 2 cores: a cold first night (no champions) within 4 hours, a following one within 90 min.
COLD_NIGHT_MINUTES, FOLLOWING_NIGHT_MINUTES = 240, 90


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _missing(name: str) -> str:
    return f"_Not measured yet: {MAKES[name]} writes `bench/results/{name}.json`._\n"


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _load_lines(result: dict[str, Any], tail: str) -> list[str]:
    """The load average before and after a benchmark (a blank line, then one sentence), or nothing if unrecorded."""
    load = result.get("load_before"), result.get("load_after")
    if not all(load):
        return []
    before, after = ("/".join(f"{v:.1f}" for v in values) for values in load)
    return ["", f"Load average (1/5/15 min) before {before}, after {after}; {tail}."]


def _with_interval(value: Any, interval: dict[str, Any] | None) -> str:
    if value is None:
        return "–"
    if not interval or interval.get("low") is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({interval['low']:.3f}–{interval['high']:.3f})"


def _target_verdict(condition: str, auc: float | None, interval: dict[str, Any] | None) -> str:
    target = TARGETS.get(condition)
    if target is None:
        return "interval only"
    if auc is None:
        return f"≥ {target:.2f}: no result"
    if auc >= target:
        return f"≥ {target:.2f}: met"
    high = (interval or {}).get("high")
    reach = " (its interval reaches it)" if high is not None and high >= target else ""
    return f"≥ {target:.2f}: missed by {target - auc:.3f}{reach}"


def accuracy_table(nightly: dict[str, Any]) -> str:
    lines = [
        "| condition | profile | px | test AUC (95 % CI) | accuracy | sensitivity | specificity | epochs "
        "| train min | img/s | peak MB | target |",
        "|---|---|--:|---|---|---|---|--:|--:|--:|--:|---|",
    ]
    for m in nightly["models"]:
        t, iv, tr = m["test"], m["intervals"], m["training"]
        if m["status"] != "succeeded":
            stage = (m.get("failure") or {}).get("stage", "?")
            lines.append(
                f"| {m['condition']} | {m['profile']} | {tr.get('image_size') or '–'} | {m['status']} at "
                f"{stage} | | | | | | | | |"
            )
            continue
        epochs = f"{tr['epochs_run']}/{tr['epochs_planned']}" + (" (early stop)" if tr.get("early_stopped") else "")
        lines.append(
            f"| {m['condition']} | {m['profile']} | {tr['image_size']} | {_with_interval(t['roc_auc'], iv.get('roc_auc'))} "
            f"| {_with_interval(t['accuracy'], iv.get('accuracy'))} | {_with_interval(t['recall'], iv.get('recall'))} "
            f"| {_with_interval(t['specificity'], iv.get('specificity'))} | {epochs} "
            f"| {_num((tr['wall_seconds'] or 0) / 60, 1)} | {_num(tr['images_per_second'], 1)} "
            f"| {_num(tr['peak_memory_mb'], 0)} | {_target_verdict(m['condition'], t['roc_auc'], iv.get('roc_auc'))} |"
        )
    lines += [
        "",
        "Test figures are on each set's own test split (never used for training, threshold or early "
        "stopping); intervals are 95 % bootstrap intervals resampled by patient where the set has patient ids. "
        "Sensitivity and specificity are at the threshold fitted on the validation split (Youden).",
        "",
        "Published references for the same original data (`../shared/datasets/README.md`):",
        "",
    ]
    seen = []
    for m in nightly["models"]:
        if m["condition"] not in seen and m["condition"] in REFERENCES:
            seen.append(m["condition"])
            lines.append(f"- **{m['condition']}**: {REFERENCES[m['condition']]}")
    return "\n".join(lines) + "\n"


def _unit(m: dict[str, Any]) -> str:
    """What a model's test figures count: studies, images scored out of fold, or test images."""
    if m.get("unit") == "study":
        return "per study"
    if m.get("estimate") == "cross-validation":
        return "out of fold (cross-validation)"
    return "per image"


def _calibration_change(calibration: dict[str, Any] | None, metric: str) -> str:
    if not calibration:
        return "–"
    before, after = (calibration.get(k, {}).get(metric) or {} for k in ("before", "after"))
    if before.get("value") is None or after.get("value") is None:
        return "–"
    return f"{before['value']:.3f} → {_with_interval(after['value'], after.get('interval'))}"


def study_calibration_table(nightly: dict[str, Any]) -> str:
    """Issue 17's second table: what each model's figures count, kappa, per-image figures, and calibration."""
    rows = [m for m in nightly["models"] if m["status"] == "succeeded" and "unit" in m]
    if not rows:
        return ""
    lines = [
        "What each row of table 1 counts, Cohen's kappa at the val-fitted threshold, the per-image ROC AUC a "
        "study-level set keeps as its second table, and calibration on the test split: ECE and Brier of the raw "
        "probabilities → after temperature scaling fitted on val (with the 95 % interval of the calibrated figure).",
        "",
        "| condition | profile | unit | ROC AUC (95 % CI) | kappa (95 % CI) | per image ROC AUC (95 % CI) | temperature "
        "| ECE before → after | Brier before → after |",
        "|---|---|---|---|---|---|--:|---|---|",
    ]
    for m in rows:
        image = m.get("image_level") or {}
        calibration = m.get("calibration") or {}
        lines.append(
            f"| {m['condition']} | {m['profile']} | {_unit(m)} "
            f"| {_with_interval(m['test']['roc_auc'], m['intervals'].get('roc_auc'))} "
            f"| {_with_interval(m.get('kappa'), m['intervals'].get('kappa'))} "
            f"| {_with_interval(image.get('roc_auc'), (image.get('intervals') or {}).get('roc_auc')) if image else '–'} "
            f"| {_num(calibration.get('temperature'), 2)} "
            f"| {_calibration_change(calibration, 'calibration_error')} | {_calibration_change(calibration, 'brier')} |"
        )
    lines += [
        "",
        "MURA's per-study humerus kappas (datasets README): about 0.44 for a CNN trained from scratch, "
        "0.60-0.73 for ImageNet-pretrained DenseNets.",
    ]
    return "\n".join(lines) + "\n"


def ensemble_table(nightly: dict[str, Any]) -> str:
    rows = nightly.get("ensembles") or []
    if not rows:
        return ""
    lines = [
        "Tried at no training cost: the mean logit of the run's profiles for the same condition, on the same "
        "test images (ROC AUC only: an ensemble threshold would need validation scores the run does not keep).",
        "",
        "| condition | ensemble of | test AUC (95 % CI) | best single profile | target |",
        "|---|---|---|--:|---|",
    ]
    for r in rows:
        best = max(r["members"].values())
        lines.append(
            f"| {r['condition']} | {' + '.join(r['profiles'])} | {_with_interval(r['roc_auc'], r['interval'])} "
            f"| {best:.3f} | {_target_verdict(r['condition'], r['roc_auc'], r['interval'])} |"
        )
    return "\n".join(lines) + "\n"


def _night_row(label: str, nightly: dict[str, Any]) -> str:
    run = nightly["run"]
    done = sum(m["status"] == "succeeded" for m in nightly["models"])
    skipped = sum(m["status"] == "skipped" for m in nightly["models"])
    train = sum((m["training"].get("wall_seconds") or 0) for m in nightly["models"])
    modes = sorted({m.get("mode") for m in nightly["models"] if m.get("mode")})
    return (
        f"| {label} | {done}/{len(nightly['models'])} succeeded"
        + (f", {skipped} skipped" if skipped else "")
        + f" | {run['state']} | {run['wall_seconds'] / 60:.1f} min | {run['cpu_busy']:.0%} | {train / 60:.1f} min "
        f"| {', '.join(modes) or '–'} | `{nightly['config']}` |"
    )


def _budget_verdict(label: str, nightly: dict[str, Any], minutes: int) -> str:
    wall = nightly["run"]["wall_seconds"] / 60
    verdict = "met" if wall <= minutes else f"missed by {wall - minutes:.0f} min"
    busy = nightly["run"]["cpu_busy"]
    busy_ok = "met" if busy >= 0.90 else f"missed by {(0.90 - busy) * 100:.0f} points"
    profiles = (nightly.get("conf") or {}).get("profiles") or []
    part = (
        f" It trained only the profile(s) {', '.join(profiles)}, so it is part of a night, not the whole."
        if profiles
        else ""
    )
    return f"{label} within {minutes} min: {verdict}; CPU busy ≥ 90 %: {busy_ok}.{part}"


def nightly_table(nightly: dict[str, Any], following: dict[str, Any] | None = None) -> str:
    lines = [
        "| night | models | run state | wall | CPU busy (both cores) | summed training time | nightly mode | config |",
        "|---|---|---|--:|--:|--:|---|---|",
        _night_row("cold (no champions)", nightly),
    ]
    verdicts = [_budget_verdict("A cold night", nightly, COLD_NIGHT_MINUTES)]
    if following:
        after = (following.get("after") or {}).get("run_id", "the cold night")
        lines.append(_night_row(f"following (champions of `{after}`)", following))
        verdicts.append(_budget_verdict("A following night", following, FOLLOWING_NIGHT_MINUTES))
    else:
        verdicts.append(f"A following night: {_missing('nightly_following').strip()}")
    lines += [
        "",
        "Targets: " + " ".join(verdicts) + " Measured by `bench/nightly.py`: one run of the `medical_training` DAG "
        f"under the embedded Airflow ({nightly['run']['executor']}, {nightly['run']['database']}, the `training` pool "
        "with one slot per core), from trigger to the run's final state, CPU from /proc/stat over the same interval "
        "(machine-wide). Summed training time exceeds wall time when two models train at once. The following night "
        "uses the champions the cold night left; `configs/following-night.yaml` skips nothing, as after a night on "
        "which every set changed, so it is the dearest following night.",
    ]
    return "\n".join(lines) + "\n"


def throughput_table(tp: dict[str, Any]) -> str:
    lines = [
        "| size | pipeline img/s | plain `model.fit` img/s | ratio | mixed_bfloat16 img/s (plain) "
        "| 1 task × 2 threads | 2 tasks × 1 thread (sum) | first step, pipeline / plain |",
        "|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for size, row in sorted(tp["sizes"].items(), key=lambda kv: int(kv[0])):
        bf16 = (row.get("plain_bf16") or {}).get("steady_images_per_second")
        lines.append(
            f"| {size} px | {row['pipeline']['steady_images_per_second']:.1f} | {row['plain']['steady_images_per_second']:.1f} "
            f"| **{row['ratio']:.3f}** | {_num(bf16, 1)} | {_num(row.get('one_task_2_threads'), 1)} "
            f"| {_num(row.get('two_tasks_1_thread'), 1)} | {row['pipeline']['seconds_to_first_step']:.0f} s / "
            f"{row['plain']['seconds_to_first_step']:.0f} s |"
        )
    worst = min(r["ratio"] for r in tp["sizes"].values())
    lines += [
        "",
        f"Target ratio ≥ 0.90: {'met' if worst >= 0.90 else 'missed'} (worst size {worst:.3f}). "
        f"{tp['images']} real pneumonia training images, {tp['epochs']} epochs, steady state = median epoch "
        "after the first; the pipeline reads files through tf.data with every callback on, the plain fit "
        "gets the same images as in-memory tensors.",
    ]
    return "\n".join(lines) + "\n"


def _rate(row: dict[str, Any] | None, digits: int = 1) -> str:
    """img/s with the min-max of its steady epochs."""
    if not row:
        return "–"
    return (
        f"{row['images_per_second']:.{digits}f} ({row['min']:.{digits}f}–{row['max']:.{digits}f})"
        if row.get("min") is not None
        else f"{row['images_per_second']:.{digits}f}"
    )


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def ceiling_lines(peak: dict[str, Any] | None) -> str:
    if not peak:
        return _missing("peak")
    p = peak["peak"]
    flops = ", ".join(
        f"{size} px {f / 1e9:.2f}"
        for size, f in sorted(peak["training_flops_per_image"].items(), key=lambda kv: int(kv[0]))
    )
    return (
        f"Ceiling (`bench/peak.py`): matmul peak {p['float32']['gflops']:.0f} GFLOP/s in float32 and "
        f"{p['bfloat16']['gflops']:.0f} GFLOP/s in bfloat16 ({p['float32']['matrix']}² matrices, all threads). "
        f"DenseNet121 training GFLOP per image ({peak['training_factor']:.0f} × the forward pass that "
        f'TensorFlow\'s cost model counts): {flops}. "share of peak" below is img/s × GFLOP per image ÷ the '
        "float32 peak.\n"
    )


def _peak_share(rate: float, size: Any, peak: dict[str, Any] | None) -> float | None:
    """Training FLOP/s at `rate` img/s as a share of the float32 matmul peak in peak.json (read now, not at run)."""
    per_image = ((peak or {}).get("training_flops_per_image") or {}).get(str(size))
    top = ((peak or {}).get("peak") or {}).get("float32", {}).get("gflops")
    return rate * per_image / (top * 1e9) if per_image and top else None


def throughput_tables(tp: dict[str, Any], peak: dict[str, Any] | None = None) -> str:
    """Pipeline against plain, precisions side by side, threads: all from one train_throughput.json."""
    sizes = sorted(tp["sizes"].items(), key=lambda kv: int(kv[0]))
    main = [(s, r) for s, r in sizes if "pipeline" in r]
    lines = [
        "| size | decode + resize img/s | pipeline img/s (min–max) | plain `model.fit` img/s (min–max) | ratio "
        "| share of FP32 peak (plain) | pipeline first step |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for size, r in main:
        pipe, plain = r["pipeline"]["float32"], r["plain"]["float32"]
        lines.append(
            f"| {size} px | {r['decode']['images_per_second']:.0f} | {_rate(pipe)} | {_rate(plain)} "
            f"| **{r['ratio']:.3f}** (± {r['ratio_noise']:.2f}) "
            f"| {_share(_peak_share(plain['images_per_second'], size, peak))} "
            f"| {_num(pipe.get('seconds_to_first_step'), 0)} s |"
        )
    if main:
        worst = min(r["ratio"] for _, r in main)
        noisy = [s for s, r in main if r["ratio_noise"] > abs(r["ratio"] - 0.95)]
        verdict = "met" if worst >= 0.95 else "missed"
        if noisy:
            verdict += f" as measured, but the noise exceeds the margin at {', '.join(f'{s} px' for s in noisy)}"
        lines += [
            "",
            f"Target pipeline / plain ≥ 0.95 at every size: {verdict} "
            f"(worst {worst:.3f}). Both in float32 with TensorFlow's default threads. The pipeline is "
            "`medcore.model.training.train_model` reading files through tf.data with every callback (checkpoints "
            "included); plain is `model.fit` on the same images as in-memory tensors. ± is the larger "
            "relative min–max spread of the two sides' steady epochs.",
            "",
        ]
        variants = list(dict.fromkeys(v for _, r in main for v in r["plain"]))
        lines += [
            "Precision, plain fit, every variant's model traced first and then taking turns one epoch each "
            "(img/s, min–max, × float32 of the same round):",
            "",
            "| size | " + " | ".join(f"`{v}`" for v in variants) + " |",
            "|--:|" + "--:|" * len(variants),
        ]
        for size, r in main:
            base = r["plain"]["float32"]["images_per_second"]
            cells = [
                f"{_rate(r['plain'][v])} ×{r['plain'][v]['images_per_second'] / base:.2f}" if v in r["plain"] else "–"
                for v in variants
            ]
            lines.append(f"| {size} px | " + " | ".join(cells) + " |")
        extra = [(size, name, row) for size, r in main for name, row in r["pipeline"].items() if name != "float32"]
        if extra:
            lines += [
                "",
                "The pipeline in another precision against today's pipeline (float32), same run, one after "
                "the other (not interleaved, so a change of load between them shows up here):",
                "",
            ]
            for size, name, row in extra:
                base = tp["sizes"][size]["pipeline"]["float32"]["images_per_second"]
                lines.append(
                    f"- {size} px: `{name}` {_rate(row)} img/s against {base:.1f}: "
                    f"**×{row['images_per_second'] / base:.2f}**"
                )
    grids = [(s, r["threads"]) for s, r in sizes if r.get("threads")]
    if grids:
        labels = list(grids[0][1])
        lines += [
            "",
            "Threads (plain float32 fit in subprocesses run one after another; two tasks = their summed img/s):",
            "",
            "| size | " + " | ".join(labels) + " |",
            "|--:|" + "--:|" * len(labels),
        ]
        for size, grid in grids:
            lines.append(
                f"| {size} px | "
                + " | ".join(_num(grid[label]["images_per_second"], 1) if label in grid else "–" for label in labels)
                + " |"
            )
    lines += _load_lines(tp, f"{tp['rounds']} steady epochs per variant")
    return "\n".join(lines) + "\n"


# Issue 16: the pipeline keeps at least this share of a plain `model.fit`'s speed at every shipped size.
PAIR_TARGET = 0.95


def pair_verdict(low: float, high: float, pairs: int, target: float = PAIR_TARGET) -> str:
    """Judge the target on the spread of the pair ratios: only a spread wholly on one side of it decides."""
    if pairs < 2:
        return "not judged (one pair has no spread)"
    if low >= target:
        return "met"
    if high < target:
        return "missed"
    return "noise exceeds the margin"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _spread(value: float | None, low: float | None, high: float | None) -> str:
    return "–" if value is None else f"{value:.3f} ({low:.3f}–{high:.3f})"


def pairs_table(tp: dict[str, Any], name: str = "train_pairs") -> str:
    """Pipeline / plain from pairs of fresh processes (bench/train_throughput.py --pairs): ratio, spread, verdict."""
    sizes = sorted(tp["sizes"].items(), key=lambda kv: int(kv[0]))
    cache = tp.get("primitive_cache_capacity")
    lines = [
        f"From `bench/results/{name}.json` (`{tp['command']}`): at each size, {tp['pairs']} pairs of runs, each run a "
        f"fresh process training {tp['epochs']} epochs; a pair is the pipeline (`medcore.model.training.train_model`: "
        "tf.data from files, callbacks, checkpoints) and a plain `model.fit` on the same images as in-memory "
        "tensors, same model, precision and batch, "
        + (
            "started at once and running side by side, as two one-slot trainings share the machine in a night. "
            if tp.get("together")
            else "one after the other, the order alternating from pair to pair. "
        )
        + "A run's speed is the median of its epochs after the first (the trace); a pair's ratio is its pipeline "
        "run over its plain run. Threads per run: "
        + (
            f"{tp['threads']} (`MEDCORE_THREADS`, as a task holding {tp['threads']} `training` pool slot(s) gets "
            "in a night)"
            + (f", inter-op {tp['inter_threads']} (`MEDCORE_INTER_THREADS`). " if tp.get("inter_threads") else ". ")
            if tp.get("threads")
            else "TensorFlow's default pools (every core). "
        )
        + "ONEDNN_PRIMITIVE_CACHE_CAPACITY: "
        + (f"{cache}." if cache else "unset (oneDNN's default, 1024).")
        + (f" **{tp['note']}**" if tp.get("note") else ""),
        "",
        "| size | precision | images × epochs | pipeline img/s (runs min–max) | plain img/s (runs min–max) "
        "| pipeline / plain: median (pairs min–max) | pairs | ≥ 0.95 | train steps only: median (min–max) "
        "| pipeline epoch s: train + val + callbacks | plain epoch s: train + val |",
        "|--:|---|--:|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    verdicts = {}
    for size, r in sizes:
        verdicts[int(size)] = verdict = pair_verdict(r["ratio_min"], r["ratio_max"], r["n_pairs"])
        pipe, plain = r["epoch_parts"]["pipeline"], r["epoch_parts"]["plain"]
        precision = f"`{r['mode']}`" + (" + fused BN" if r.get("fused_batch_norm") else "")
        lines.append(
            f"| {size} px | {precision} | {r['images']} × {tp['epochs']} | {_rate(r['pipeline'])} | {_rate(r['plain'])} "
            f"| **{r['ratio']:.3f}** ({r['ratio_min']:.3f}–{r['ratio_max']:.3f}) | {r['n_pairs']} | {verdict} "
            f"| {_spread(r.get('train_ratio'), r.get('train_ratio_min'), r.get('train_ratio_max'))} "
            f"| {_seconds(pipe['epoch_seconds'])}: {_seconds(pipe['train_seconds'])} + "
            f"{_seconds(pipe['validation_seconds'])} + {_seconds(pipe['callbacks_seconds'])} "
            f"| {_seconds(plain['epoch_seconds'])}: {_seconds(plain['train_seconds'])} + "
            f"{_seconds(plain['validation_seconds'])} |"
        )
    shipped = tp.get("shipped_sizes") or []
    unmeasured = [s for s in shipped if s not in verdicts]
    judged = {s: v for s, v in verdicts.items() if s in shipped} if shipped else verdicts
    if any(v == "missed" for v in judged.values()):
        overall = "missed at " + ", ".join(f"{s} px" for s, v in judged.items() if v == "missed")
    elif unmeasured or not judged or any(v != "met" for v in judged.values()):
        open_sizes = [f"{s} px" for s, v in judged.items() if v != "met"] + [
            f"{s} px (not measured)" for s in unmeasured
        ]
        overall = "not shown: " + ", ".join(open_sizes)
    else:
        overall = "met"
    orders = "; ".join(
        f"{size} px {' / '.join(f'{k} {v:.3f}' for k, v in r['ratio_by_order'].items() if v is not None)}"
        for size, r in sizes
    )
    lines += [
        "",
        f"Target pipeline / plain ≥ {PAIR_TARGET:.2f} at every shipped size "
        f"({', '.join(f'{s} px' for s in shipped) or 'not recorded'}): **{overall}**. A size meets it when every "
        "pair's ratio is at least 0.95, misses it when every pair's ratio is below, and otherwise the spread of the "
        "pairs (their noise) is wider than the median's margin to 0.95, so the run does not decide. "
        "Epoch seconds are medians of the steady epochs: train steps, validation (the same val images on both sides) "
        "and, for the pipeline, its epoch-end callbacks (CSV log, best-epoch weights, BackupAndRestore's "
        "checkpoint), which cost the same per epoch however many images it holds, so their share here "
        'is larger than in a night whose epochs hold more images; "train steps only" is each pair\'s ratio '
        "over the train steps alone, without them. Median ratio by which side ran first (drift would "
        f"separate them): {orders}.",
    ]
    lines += _cpu_pairs_lines(sizes, shipped)
    lines += _load_lines(tp, f"wall time {(tp.get('wall_seconds') or 0) / 60:.0f} min")
    return "\n".join(lines) + "\n"


def _cpu_pairs_lines(sizes: list[tuple[str, dict[str, Any]]], shipped: list[int]) -> list[str]:
    """The same pairs per CPU-second of each process, where the runs recorded their CPU time."""
    rows = [(size, r) for size, r in sizes if r.get("cpu_ratio") is not None]
    if not rows:
        return []

    def share(parts: dict[str, Any]) -> str:
        cpu, wall = parts.get("cpu_seconds"), parts.get("epoch_seconds")
        return f"{cpu / wall:.0%}" if cpu and wall else "–"

    lines = [
        "",
        "The same pairs per CPU-second: each run's images over its own process's CPU seconds (every thread, "
        "tf.data's included) from one epoch's start to the next, so what the pipeline computes beyond the plain "
        "fit counts and time a run spent off the CPU does not. CPU share is a run's CPU seconds over its "
        "wall seconds per epoch (medians of steady epochs); idle and steal are the whole machine's shares of "
        "CPU time over the same epochs, from /proc/stat (steal: time the host kept this VM's vCPUs).",
        "",
        "| size | pipeline img per CPU-s | plain img per CPU-s | pipeline / plain per CPU-second: median (pairs "
        "min–max) | ≥ 0.95 | CPU share of wall: pipeline / plain | machine idle | machine steal |",
        "|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    verdicts = {}
    for size, r in rows:
        verdicts[int(size)] = verdict = pair_verdict(r["cpu_ratio_min"], r["cpu_ratio_max"], r["n_pairs"])
        pipe, plain = r["epoch_parts"]["pipeline"], r["epoch_parts"]["plain"]
        idle = _median_of([pipe.get("machine_idle"), plain.get("machine_idle")])
        steal = _median_of([pipe.get("machine_steal"), plain.get("machine_steal")])
        lines.append(
            f"| {size} px | {r['pipeline'].get('images_per_cpu_second', 0):.1f} "
            f"| {r['plain'].get('images_per_cpu_second', 0):.1f} "
            f"| **{r['cpu_ratio']:.3f}** ({r['cpu_ratio_min']:.3f}–{r['cpu_ratio_max']:.3f}) | {verdict} "
            f"| {share(pipe)} / {share(plain)} "
            f"| {'–' if idle is None else f'{idle:.0%}'} | {'–' if steal is None else f'{steal:.1%}'} |"
        )
    judged = [s for s in (shipped or verdicts) if s in verdicts]
    missing = [s for s in shipped if s not in verdicts]
    met = [s for s in judged if verdicts[s] == "met"]
    lines += [
        "",
        f"Per CPU-second, pipeline / plain ≥ {PAIR_TARGET:.2f}: "
        + (
            "**met at every shipped size**."
            if judged and len(met) == len(judged) and not missing
            else "**"
            + "; ".join([f"{s} px {verdicts[s]}" for s in judged] + [f"{s} px not measured" for s in missing])
            + "**."
        ),
    ]
    return lines


def _median_of(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


AMX_RESULTS = ("peak_amx", "train_throughput_amx", "precision_profile_amx")


def _cpu_id(m: dict[str, Any]) -> str:
    return f" ({m['cpu_id']})" if m.get("cpu_id") else ""  # recorded since two AMD kinds shared one name


def machine_lines(loaded: dict[str, dict[str, Any] | None]) -> list[str]:
    """One line per CPU the loaded results were measured on, naming the results measured there."""
    by_machine: dict[tuple[str, str | None, tuple[str, ...]], tuple[dict[str, Any], list[str]]] = {}
    for name, result in loaded.items():
        m = (result or {}).get("machine")
        if m:
            by_machine.setdefault((m["cpu"], m.get("cpu_id"), tuple(m["flags"])), (m, []))[1].append(name)
    label = "Machine" if len(by_machine) == 1 else "Machines"
    return [
        f"- **{label}**: {m['cpu']}{_cpu_id(m)}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU; flags: "
        f"{', '.join(m['flags']) or 'none of note'}; {m['os']}, Python {m['python']}"
        + ("" if len(by_machine) == 1 else f"; measured here: {', '.join(names)}")
        for m, names in by_machine.values()
    ]


def amx_section(loaded: dict[str, dict[str, Any] | None]) -> str:
    """Ceiling, precisions side by side and the kernel profile, from the results measured on an AMX machine."""
    peak, tp, prof = (loaded[name] for name in AMX_RESULTS)
    cpu = next(r["machine"]["cpu"] for r in (peak, tp, prof) if r)
    parts = [f"Measured on {cpu} (AMX), one machine, one session; compare these with each other only.\n"]
    parts.append(ceiling_lines(peak) if peak else _missing("peak_amx"))
    parts.append(throughput_tables(tp, peak) if tp else _missing("train_throughput_amx"))
    parts.append(precision_profile_table(prof) if prof else _missing("precision_profile_amx"))
    return "\n".join(parts)


def op_ms_by_category(row: dict[str, Any]) -> dict[str, float]:
    """A profiled variant's op time by kind, without the executor's container events.

    Results written before bench/precision_profile.py skipped them counted `Process` (which spans every op it
    runs) under "other"; its total is in `top_ops`, so it is taken back out here.
    """
    from bench.precision_profile import CONTAINER_OPS

    cats = dict(row.get("ms_by_category") or {})
    counted = sum(op["ms"] for op in row.get("top_ops", []) if op["op"] in CONTAINER_OPS)
    if counted and cats.get("other", 0) >= counted:
        cats["other"] -= counted
    return cats


def precision_profile_table(prof: dict[str, Any]) -> str:
    from bench.precision_profile import CATEGORIES

    lines = [
        f"One training step at {prof['size']} px, batch {prof['batch']}, {prof['steps']} steps under "
        "TensorFlow's profiler with `ONEDNN_VERBOSE=1` (`bench/precision_profile.py`); op time by kind as a "
        "share of all op time:",
        "",
        "| variant | img/s (profiled) | oneDNN ISA | " + " | ".join(CATEGORIES) + " |",
        "|---|--:|---|" + "--:|" * len(CATEGORIES),
    ]
    for name, row in prof["variants"].items():
        cats = op_ms_by_category(row)
        total = sum(cats.values()) or 1
        lines.append(
            f"| `{name}` | {row['images_per_second']:.1f} | {', '.join(row['onednn']['isas']) or '–'} | "
            + " | ".join(f"{cats.get(c, 0) / total:.0%}" for c in CATEGORIES)
            + " |"
        )
    return "\n".join(lines) + "\n"


def deletion_baselines_table(result: dict[str, Any]) -> str:
    """Grad-CAM's deletion test on a night's models under each fill: what the fill removes, and the verdict."""
    s = result["settings"]
    lines = [
        f"The Grad-CAM stage's deletion test run again on the night's trained models (`{result['run_folder']}`), "
        f"once per fill for the deleted pixels: the {s['deletion_images']} test images each model scores "
        f"highest, {s['deletion_steps']} steps, {s['random_maps']} random maps per image, seed {s['seed']}. "
        "Logits are means over those images; the verdict is the paired one-sided Wilcoxon test of Grad-CAM's "
        f"area against the random maps' at level {s['alpha']}.",
        "",
        "| model | map | fill | logit intact → all deleted | Grad-CAM area | random area | Grad-CAM wins | p | verdict |",
        "|---|---|---|---|--:|--:|--:|--:|---|",
    ]
    for m in result["models"]:
        for fill in ("blur", "mean"):
            row = m.get(fill)
            if not row:
                continue
            lines.append(
                f"| {m['condition']} {m['profile']} | {'×'.join(map(str, m['map_shape']))} | {fill} "
                f"| {row['intact_logit']:.2f} → {row['deleted_logit']:.2f} | {row['gradcam_deletion_auc']:.2f} "
                f"| {row['random_deletion_auc']:.2f} | {row['images_gradcam_better']}/{m['images']} "
                f"| {row['p_value']:.2g} | {'beats random' if row['better_than_random'] else 'not evidence'} |"
            )
    return "\n".join(lines) + "\n"


def stages_table(stages: dict[str, Any] | None, validate: dict[str, Any] | None) -> str:
    lines = []
    if stages:
        lines += [
            "| size | inference img/s (`predict_files`) | Grad-CAM img/s | Grad-CAM first call |",
            "|--:|--:|--:|--:|",
        ]
        for size, row in sorted(stages["sizes"].items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {size} px | {row['inference_images_per_second']:.1f} | {row['gradcam_images_per_second']:.1f} "
                f"| {row['gradcam_first_call_seconds']:.1f} s ({row['gradcam_images']} images) |"
            )
        lines += [
            "",
            f"Inference on {stages['inference_source']} (decode and resize included); Grad-CAM on layer "
            "`relu` in batches of 32.",
            "",
        ]
    else:
        lines.append(_missing("stages_speed"))
    if validate:
        full = validate["full"]
        lines.append(
            f"Validation ({validate['condition']}, {full['images']} images, one decode pass): "
            f"{validate['images_per_second']:.0f} img/s on {validate['cpus']} CPUs, peak RSS "
            f"{full['peak_mb']:.0f} MB; a half-size copy peaks at {validate['half']['peak_mb']:.0f} MB "
            f"(ratio {validate['peak_rss_ratio']:.2f}: memory does not grow with the set)."
        )
    else:
        lines.append(_missing("validate_speed"))
    return "\n".join(lines) + "\n"


def overhead_table(overhead: dict[str, Any]) -> str:
    lines = ["| how the same run was executed | wall | ratio to `medcore run` | CPU busy |", "|---|--:|--:|--:|"]
    base = overhead["modes"]["medcore_run"]["wall_seconds"]
    for name, label in (
        ("medcore_run", "`medcore run` (one process, serial)"),
        ("dags_test", "`airflow dags test` (embedded Airflow, serial)"),
        ("scheduler", "DAG run under the scheduler (LocalExecutor, SQLite)"),
    ):
        mode = overhead["modes"].get(name)
        if mode:
            lines.append(
                f"| {label} | {mode['wall_seconds']:.0f} s | **{mode['wall_seconds'] / base:.2f}** "
                f"| {mode['cpu_busy']:.0%} |"
            )
    lines += ["", f"Workload: {overhead['workload']}. Target ratio ≤ 1.10."]
    return "\n".join(lines) + "\n"


def pretraining_summary(record: dict[str, Any]) -> str:
    images = record["images"]
    train = sum(c.get("train", 0) for c in images.values())
    val = sum(c.get("val", 0) for c in images.values())
    dropped = sum(record.get("test_lookalikes_dropped", {}).values())
    scores = ", ".join(f"{c} {a:.3f}" for c, a in (record.get("val_auc") or {}).items())
    return (
        f"The backbone (`medcore pretrain --profile {record['profile']}`, {record['image_size']} px) learnt from "
        f"{train:,} train images of {len(record['conditions'])} conditions, picking its best epoch "
        f"({record['best_epoch']} of {record['epochs']}) on {val:,} val images by mean per-condition val AUC"
        f"{f' ({scores})' if scores else ''}. It took {record['wall_seconds'] / 60:.1f} min at "
        f"{_num(record.get('images_per_second'), 1)} img/s on {record['threads'].get('intra_op') or 'all'} "
        "threads. No test image of any condition was read, and "
        + (
            f"{dropped} train/val images that were near duplicates of a test image were left out."
            if dropped
            else "no train/val image was a near duplicate of any condition's test image."
        )
    )


def shared_backbone_table(scratch: dict[str, Any] | None, shared: dict[str, Any]) -> str:
    before = {
        (m["condition"], m["profile"]): m["test"]["roc_auc"]
        for m in (scratch or {}).get("models", [])
        if m["status"] == "succeeded"
    }
    lines = []
    if shared.get("shared_backbone"):
        lines += [pretraining_summary(shared["shared_backbone"]), ""]
    lines += [
        "| condition | profile | from scratch (table 1) | shared backbone: test AUC (95 % CI) | change "
        "| epochs | train min | target |",
        "|---|---|--:|---|--:|--:|--:|---|",
    ]
    for m in shared["models"]:
        t, iv, tr = m["test"], m["intervals"], m["training"]
        old = before.get((m["condition"], m["profile"]))
        if m["status"] != "succeeded":
            lines.append(f"| {m['condition']} | {m['profile']} | {_num(old)} | {m['status']} | | | | |")
            continue
        change = "–" if old is None or t["roc_auc"] is None else f"{t['roc_auc'] - old:+.3f}"
        lines.append(
            f"| {m['condition']} | {m['profile']} | {_num(old)} | "
            f"{_with_interval(t['roc_auc'], iv.get('roc_auc'))} | {change} | "
            f"{tr['epochs_run']}/{tr['epochs_planned']} | {_num((tr['wall_seconds'] or 0) / 60, 1)} | "
            f"{_target_verdict(m['condition'], t['roc_auc'], iv.get('roc_auc'))} |"
        )
    run = shared["run"]
    done = sum(m["status"] == "succeeded" for m in shared["models"])
    lines += [
        "",
        f"The night itself (`{shared['config']}`, same DAG under the scheduler): {done}/{len(shared['models'])} "
        f"models in {run['wall_seconds'] / 60:.1f} min wall, CPU busy {run['cpu_busy']:.0%}.",
    ]
    rows = shared.get("ensembles") or []
    if rows:
        lines += [
            "",
            "Ensembles of the two profiles (mean logit, as above): "
            + "; ".join(f"{r['condition']} {_with_interval(r['roc_auc'], r['interval'])}" for r in rows)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def nights_table(nights: dict[str, Any]) -> str:
    """Four nights per policy: cost, plan, decision and champion per night; then the targets, judged on the figures."""
    policies = nights["policies"]
    scale = (
        "the full sets"
        if nights["fraction"] >= 1.0
        else f"a keyed-hash {nights['fraction']:.0%} of each set's patients (reduced scale)"
    )
    epochs = f"{nights['epochs']} epochs per model" if nights.get("epochs") else "each profile's epochs"
    share = nights.get("continue_learning_rate")  # recorded since the warm start's rate became a setting
    rate = f" at {share:.0%} of the profile's learning rate" if share is not None else ""
    lines = [
        f"Run: `{nights['command']}` on {scale}: {', '.join(nights['conditions'])} × "
        f"{', '.join(nights['profiles'])}, {epochs} (a warm start trains {nights['continue_epochs']:.0%} of "
        f"them{rate}), train images arriving in steps of {', '.join(f'{s:.0%}' for s in nights['steps'])}; val and "
        "test fixed (the locked test split). Each night runs `medcore run`; CPU minutes are the night "
        "process's own (user + system), so they compare the policies fairly; wall time also counts waiting for "
        "cores other jobs (or the other policy, when run side by side) held.",
        "",
        "| policy | night | condition | train / val / test images | wall min | CPU min | plan | decision | "
        "challenger test AUC (95 % CI) | champion test AUC before → after | images moved (last night / full split) |",
        "|---|--:|---|---|--:|--:|---|---|---|---|---|",
    ]
    for policy, record in policies.items():
        for night in record["nights"]:
            for condition, c in night["conditions"].items():
                images = night["images"][condition]
                chosen = c["profiles"].get(c["candidate"] or "", {})
                lines.append(
                    f"| {policy} | {night['night']} | {condition} | {images['train']} / {images['val']} / "
                    f"{images['test']} | {night['wall_seconds'] / 60:.1f} | {night['cpu_minutes']:.1f} | {c['mode']} | "
                    f"{c['decision']} | {_with_interval(c['challenger_test_auc'], chosen.get('test_interval'))} | "
                    f"{_num(c['champion_before_test_auc'])} → {_num(c['champion_after_test_auc'])} | "
                    f"{c['moved_since_last_night']} / {c['moved_since_full_split']} |"
                )
    lines += [
        "",
        "| policy | CPU min, all nights | wall min, all nights | final champion test AUC |",
        "|---|--:|--:|---|",
    ]
    for policy, record in policies.items():
        last = record["nights"][-1]["conditions"]
        finals = ", ".join(f"{c} {_num(r['champion_after_test_auc'])}" for c, r in last.items())
        lines.append(f"| {policy} | {record['cpu_minutes']:.1f} | {record['wall_minutes']:.1f} | {finals} |")
    lines.append("")
    moved = [
        c["moved_since_last_night"] or 0
        for r in policies.values()
        for n in r["nights"]
        for c in n["conditions"].values()
    ] + [
        c["moved_since_full_split"] or 0
        for r in policies.values()
        for n in r["nights"]
        for c in n["conditions"].values()
    ]
    deltas = [
        c["paired_selection_delta"]
        for r in policies.values()
        for n in r["nights"]
        for c in n["conditions"].values()
        if c["decision"] == "promoted" and c["paired_selection_delta"] is not None
    ]
    verdicts = [
        f"no image changed split: {'met' if not any(moved) else f'missed ({sum(moved)} moves)'}",
        "no promotion lowered the champion's selection AUC by more than the margin "
        f"({nights['margin']:.2f}): "
        + ("met" if all(d >= -nights["margin"] for d in deltas) else "missed")
        + (f" (worst paired difference {min(deltas):+.3f})" if deltas else " (no promotion over a champion)"),
    ]
    if {"retrain", "continue"} <= set(policies):
        cheap = policies["continue"]["cpu_minutes"] <= policies["retrain"]["cpu_minutes"] / 2
        ratio = policies["continue"]["cpu_minutes"] / policies["retrain"]["cpu_minutes"]
        verdicts.append(
            f"continue used {ratio:.2f}× retrain's CPU minutes (target ≤ 0.5): {'met' if cheap else 'missed'}"
        )
        finals = {p: policies[p]["nights"][-1]["conditions"] for p in ("retrain", "continue")}
        paired = nights.get("final_paired") or {}
        for condition in finals["retrain"]:
            a, b = (
                finals["continue"][condition]["champion_after_test_auc"],
                finals["retrain"][condition]["champion_after_test_auc"],
            )
            if condition in paired:
                verdicts.append(f"{condition}: {_final_pair(paired[condition])}")
            elif a is not None and b is not None:
                verdicts.append(
                    f"{condition}: continue's final champion {a:.3f} vs retrain's {b:.3f} "
                    f"({'reached' if a >= b else 'below'})"
                )
    lines += [f"- {v}" for v in verdicts]
    return "\n".join(lines) + "\n"


def mean_with_t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The mean of per-seed differences and its Student-t interval. The spread between seeds holds what one
    seed's bootstrap cannot: training's luck and the drawn val split, so this is the interval the policy is
    judged by once there are a few seeds."""
    from scipy.stats import t

    n = len(values)
    mean = statistics.fmean(values)
    half = t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / n**0.5
    return mean, mean - half, mean + half


def seeds_table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """The same nights repeated with other seeds: per seed and condition, the cost ratio and the final champions
    compared paired; then the spread of the differences, which one seed cannot show."""
    lines = [
        "Training is deterministic for a given seed and machine, so one pair of chains measures one seed's luck "
        "as much as the policy. Each row is a pair of chains (`bench/nights.py --seed N`, merged with `--merge`), or "
        "a continue chain and retrain's last night alone, which trains the same model as the full retrain "
        "chain's last night (`--policies retrain --steps 1.0`; it saves three scratch trainings but cannot "
        "give retrain's CPU minutes). The seed keys the drawn val split, the order train images arrive in and every draw of "
        "training. The locked test split is the set's own wherever it ships one.",
        "",
        "| seed | scale | CPU | file | condition | CPU min retrain / continue (ratio) | "
        "final test AUC retrain / continue | continue − retrain (95 % CI) | reading |",
        "|---|--:|---|---|---|---|---|---|---|",
    ]
    deltas: dict[tuple[str, float], list[float]] = {}
    for name, run in runs:
        policies = run["policies"]
        if not ({"retrain", "continue"} <= set(policies) and run.get("final_paired")):
            continue
        cpu = policies["retrain"]["cpu_minutes"], policies["continue"]["cpu_minutes"]
        costs = (
            f"— / {cpu[1]:.1f} (retrain ran its last night only)"
            if run.get("retrain_last_night_only")
            else f"{cpu[0]:.1f} / {cpu[1]:.1f} ({cpu[1] / cpu[0]:.2f}×)"
        )
        where = run.get("machine") or {}
        widest = next((f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in where.get("flags", [])), None)
        cpu_name = f"{where.get('cpu', '?')}{_cpu_id(where)}" + (f", {widest}" if widest else "")
        for condition, d in run["final_paired"].items():
            deltas.setdefault((condition, run["fraction"]), []).append(d["delta"])
            reading = "reached" if d["delta"] >= 0 else "below, not shown worse" if d["high"] >= 0 else "worse"
            lines.append(
                f"| {run.get('seed', 'the config’s')} | {run['fraction']:.0%} | {cpu_name} | `{name}` | {condition} "
                f"| {costs} "
                f"| {d['retrain_auc']:.3f} / {d['continue_auc']:.3f} | {d['delta']:+.3f} "
                f"({d['low']:+.3f} to {d['high']:+.3f}) | {reading} |"
            )
    lines.append("")
    for (condition, fraction), values in deltas.items():
        if len(values) > 1:
            mean, low, high = mean_with_t_interval(values)
            lines.append(
                f"- {condition} at {fraction:.0%} scale: over {len(values)} seeds continue − retrain averaged "
                f"{mean:+.3f} (95 % t interval over seeds {low:+.3f} to {high:+.3f}; "
                f"from {min(values):+.3f} to {max(values):+.3f}); continue below retrain in "
                f"{sum(v < 0 for v in values)} of {len(values)}"
            )
    return "\n".join(lines) + "\n"


def _final_pair(d: dict[str, Any]) -> str:
    """Continue's final champion against retrain's, paired on the same test images, and what the interval says."""
    if d["delta"] >= 0:
        reading = "reached"
    elif d["high"] >= 0:
        reading = "below, but the interval spans 0: not shown worse"
    else:
        reading = "below: the interval excludes 0"
    return (
        f"continue's final champion {d['continue_auc']:.3f} vs retrain's {d['retrain_auc']:.3f} on the same "
        f"{d['n']} test images, continue − retrain {d['delta']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}, "
        f"{d['units']} {d['unit']}s resampled): {reading}"
    )


def _difference(d: dict[str, Any], what: str) -> str:
    """A paired pad − squash difference with its interval, and which way the interval points."""
    if d["low"] > 0:
        reading = "pad better"
    elif d["high"] < 0:
        reading = "squash better"
    else:
        reading = "no difference shown (the interval spans 0)"
    return (
        f"{d['delta']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}) on the same {d['n']} test {what} "
        f"({d['n_positive']} positive; {d['units']} {d['unit']}s resampled): {reading}"
    )


def _run_wall(record: dict[str, Any]) -> str:
    """A resize variant's run wall minutes; a reused run's were spent on more than this variant."""
    return "reused" if record.get("reused") else f"{record['wall_seconds'] / 60:.1f}"


def resize_table(resize: dict[str, Any]) -> str:
    """Squash against pad: per variant the figures and cost, per condition the images' aspect and the paired difference."""
    scale = (
        "the full sets"
        if resize["fraction"] >= 1.0
        else f"a keyed-hash {resize['fraction']:.0%} of each set's patients (reduced scale)"
    )
    # per condition: a condition may override its profile's epochs
    epochs_text = ", ".join(f"{c} {n} epoch{'s' if n != 1 else ''}" for c, n in resize["epochs"].items())
    lines = [
        f"Run: `{resize['command']}` on {scale}: profile `{resize['profile']}` ({resize['image_size']} px, "
        f"{epochs_text}) trained from scratch twice, once with `resize: squash` (stretched "
        "to the square) and once with `resize: pad` (aspect kept, padded with black, the padding masked out of "
        "Grad-CAM), each by a `medcore run` with a registry of its own unless reused below. Both variants see "
        "the same images in the same split.",
        "",
    ]
    for variant, record in resize["variants"].items():
        if record.get("reused"):
            lines[-1:-1] = [
                f"The `{variant}` models were not trained again: they are those of `{record['run_folder']}`, "
                "which trained them from an empty registry with the same profile, data and seed (`--reuse`); "
                "its run wall time is that of everything it ran.",
            ]
    for condition, a in resize["aspect"].items():
        w = a.get("width_over_height")
        if not w:
            lines.append(f"- **{condition}**: no image header could be read ({a['unread']} files).")
            continue
        lines.append(
            f"- **{condition}** images, width / height: mean {w['mean']:.2f}, median {w['median']:.2f}, "
            f"{w['min']:.2f}–{w['max']:.2f} ({a['read']:,} of {a['images']:,} read); "
            f"{a['square_within_5pct']:.0%} within 5 % of square; a padded input is {a['padding']:.0%} padding "
            "on average."
        )
    lines += [
        "",
        "| condition | resize | test AUC per image (95 % CI) | per study (95 % CI) | study kappa (95 % CI) "
        "| epochs | train min | run wall min |",
        "|---|---|---|---|---|--:|--:|--:|",
    ]
    for condition in resize["conditions"]:
        for variant, record in resize["variants"].items():
            r = record["conditions"][condition]
            if r["status"] != "succeeded":
                stage = (r.get("failure") or {}).get("stage", "?")
                lines.append(f"| {condition} | {variant} | failed at {stage} | | | | | {_run_wall(record)} |")
                continue
            image, study = r["image"] or {}, r["study"] or {}
            epochs = f"{r['epochs_run']}/{r['epochs_planned']}" + (" (early stop)" if r.get("early_stopped") else "")
            used = r["resize"] if r["resize"] == variant else f"{variant} (trained with {r['resize']}!)"
            lines.append(
                f"| {condition} | {used} | {_with_interval(image.get('roc_auc'), image.get('interval'))} "
                f"| {_with_interval(study.get('roc_auc'), study.get('interval'))} "
                f"| {_with_interval(study.get('kappa'), study.get('kappa_interval'))} | {epochs} "
                f"| {_num(r['train_minutes'], 1)} | {_run_wall(record)} |"
            )
    lines += ["", "Paired, pad − squash ROC AUC (each bootstrap draw scores both models on the same patients):", ""]
    for condition, p in resize["paired"].items():
        if not p or not p.get("image"):
            why = (p or {}).get("error") or "a variant has no test predictions"
            lines.append(f"- {condition}: not compared ({why}).")
            continue
        if not p["images_paired"] == p["images_squash"] == p["images_pad"]:
            lines.append(
                f"- {condition}: the two variants' test splits differ; only {p['images_paired']} of their "
                f"{p['images_squash']} (squash) and {p['images_pad']} (pad) test images are paired below."
            )
        lines.append(f"- {condition}, per image: {_difference(p['image'], 'images')}.")
        if p.get("study"):
            lines.append(
                f"- {condition}, per study ({p['study']['aggregation']} of its images): "
                f"{_difference(p['study'], 'studies')}."
            )
    lines += [
        "",
        "Run wall time covers the whole `medcore run` (validate, train, evaluate, Grad-CAM, report); "
        "intervals are 95 % bootstrap intervals resampled by patient.",
    ]
    return "\n".join(lines) + "\n"


def night_cost_tables(result: dict[str, Any]) -> str:
    """bench/night_cost.py: the shipped cold night per CPU kind, and the planner's per-chain backtests."""
    lines = [
        f"From recorded figures only (`bench/night_cost.py`), {result['slots']} cores, budget "
        f"{result['budget_minutes']:.0f} min. *Predicted*: the planner (`medcore.nights.budget`) on that CPU's figures; "
        "*planned*: the night it fits into the budget, and what it cuts.",
        "",
        "| CPU | source | s per image-epoch 128 / 160 px | shipped cold night: predicted | measured | planned | cuts |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        measured = f"{r['full_night_measured']} min" if r["full_night_measured"] else "not measured"
        cuts = "; ".join(r["cuts"]) or "none"
        lines.append(
            f"| {r['cpu']} | {r['source']} | {r['seconds_per_image_epoch_128']} / {r['seconds_per_image_epoch_160']} "
            f"| {r['full_night_predicted']} min | {measured} | {r['planned_for_240']} min | {cuts} |"
        )
    lines += [
        "",
        "The planner's prediction against recorded nights, per chain (validate + train + evaluate + Grad-CAM task "
        "minutes) and for the night. *Leave one out*: each chain from the speed of the night's other chains; "
        "*from the evening before*: the following night from the cold night's figures, as the planner would have "
        "predicted it.",
        "",
        "| night | CPU | how | night: predicted / measured | worst chain | chains within 20 % |",
        "|---|---|---|---|---|---|",
    ]
    for t in result["backtests"]:
        worst = max(t["chains"], key=lambda r: abs(r["error"]))
        within = sum(abs(r["error"]) <= 0.20 for r in t["chains"])
        lines.append(
            f"| `{t['night']}` | {t['cpu']} | {t['kind']} | {t['night_predicted']} / {t['night_actual']} min "
            f"({t['night_error']:+.1%}) | {worst['chain']} {worst['error']:+.1%} | {within} of {len(t['chains'])} |"
        )
    return "\n".join(lines) + "\n"


def render(results: Path) -> str:
    loaded = {name: _load(results, name) for name in MAKES}
    stamp = next(
        (
            r
            for r in (
                loaded["nightly"],
                loaded["train_throughput"],
                loaded["overhead"],
                loaded["stages_speed"],
                loaded["validate_speed"],
            )
            if r
        ),
        None,
    )
    out = [
        "# Benchmarks",
        "",
        "Generated by `bench/report.py` from the raw results in `bench/results/*.json` (`make bench` measures "
        "and regenerates; `make bench-report` only regenerates). Every figure below was measured on the "
        "machine named here; this machine is shared and noisy, so compare ratios taken in one run rather "
        "than absolute speeds across runs.",
        "",
    ]
    if stamp:
        v = stamp["versions"]
        out += machine_lines(loaded)
        out += [
            "- **Versions**: " + ", ".join(f"{k} {val}" for k, val in v.items()),
            "- **Measured**: "
            + ", ".join(f"{name} {r['machine']['date'][:16].replace('T', ' ')} UTC" for name, r in loaded.items() if r),
            "",
        ]
    out += ["## 1. Accuracy per condition and profile (real sets)", ""]
    out.append(accuracy_table(loaded["nightly"]) if loaded["nightly"] else _missing("nightly"))
    if loaded["nightly"] and study_calibration_table(loaded["nightly"]):
        out += [study_calibration_table(loaded["nightly"])]
    if loaded["nightly"] and loaded["nightly"].get("ensembles"):
        out += [ensemble_table(loaded["nightly"])]
    out += ["## 2. Throughput", "", "### Training: the pipeline against plain Keras", ""]
    tp = loaded["train_throughput"]
    if tp and any("decode" in row for row in tp["sizes"].values()):
        out += [ceiling_lines(loaded["peak"]), throughput_tables(tp, loaded["peak"])]
    else:
        out.append(throughput_table(tp) if tp else _missing("train_throughput"))
    out += ["### Training: the pipeline against plain Keras, in pairs of fresh processes", ""]
    out.append(pairs_table(loaded["train_pairs"]) if loaded["train_pairs"] else _missing("train_pairs"))
    # The same measurement again under other settings (e.g. `--primitive-cache 4096 --out train_pairs_cache4096`).
    for extra in sorted(results.glob("train_pairs_*.json")):
        out += [pairs_table(json.loads(extra.read_text()), extra.stem)]
    out += ["### Where a training step spends its time", ""]
    out.append(
        precision_profile_table(loaded["precision_profile"])
        if loaded["precision_profile"]
        else _missing("precision_profile")
    )
    if any(loaded[name] for name in AMX_RESULTS):
        out += ["### Precision on a CPU with AMX", ""]
        out.append(amx_section(loaded))
    out += ["### Inference, Grad-CAM and validation", ""]
    out.append(stages_table(loaded["stages_speed"], loaded["validate_speed"]))
    out += ["### Grad-CAM's deletion test: what the deleted pixels become", ""]
    out.append(
        deletion_baselines_table(loaded["deletion_baselines"])
        if loaded["deletion_baselines"]
        else _missing("deletion_baselines")
    )
    out += ["## 3. Orchestration overhead", ""]
    out.append(overhead_table(loaded["overhead"]) if loaded["overhead"] else _missing("overhead"))
    out += ["## 4. The whole nightly run", ""]
    out.append(
        nightly_table(loaded["nightly"], loaded["nightly_following"]) if loaded["nightly"] else _missing("nightly")
    )
    out += ["## 5. In-domain pre-training: one shared backbone", ""]
    out.append(
        shared_backbone_table(loaded["nightly"], loaded["nightly_shared"])
        if loaded["nightly_shared"]
        else _missing("nightly_shared")
    )
    out += ["## 6. Nights that build on each other", ""]
    out.append(nights_table(loaded["nights"]) if loaded["nights"] else _missing("nights"))
    seeded = sorted(results.glob("nights_seed*.json"))
    if seeded:
        earlier = [results / "nights.json", results / "nights_reduced.json"]  # the config's seed, full and 30 %
        runs = [(path.name, json.loads(path.read_text())) for path in [*earlier, *seeded] if path.exists()]
        out += ["### The same nights with other seeds", "", seeds_table(runs)]
    out += ["## 7. Resize: squash against pad (aspect kept)", ""]
    out.append(resize_table(loaded["resize"]) if loaded["resize"] else _missing("resize"))
    out += ["## 8. What a night costs per CPU kind, and the night planner's predictions", ""]
    night_cost = _load(results, "night_cost")
    out.append(
        night_cost_tables(night_cost)
        if night_cost
        else "_Not measured yet: `.venv/bin/python bench/night_cost.py` writes `bench/results/night_cost.json`._\n"
    )
    notes = ROOT / "bench" / "notes.md"
    if notes.exists():
        out += ["## Reading these numbers", "", notes.read_text().strip(), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from medcore.jsonio import atomic_write_bytes

    atomic_write_bytes(Path(args.out), render(Path(args.results)).encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
