"""Accuracy per condition and profile, calibration, ensembles, and the shared backbone against scratch."""

from __future__ import annotations

from typing import Any

from bench.reporting.common import _num, _with_interval

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
        "| condition | profile | px | test AUC (95 % CI) | sens / spec | epochs | target |",
        "|---|---|--:|---|---|--:|---|",
    ]
    for m in nightly["models"]:
        t, iv, tr = m["test"], m["intervals"], m["training"]
        if m["status"] != "succeeded":
            stage = (m.get("failure") or {}).get("stage", "?")
            lines.append(
                f"| {m['condition']} | {m['profile']} | {tr.get('image_size') or '–'} | {m['status']} at "
                f"{stage} | | | |"
            )
            continue
        epochs = f"{tr['epochs_run']}/{tr['epochs_planned']}" + (" (early stop)" if tr.get("early_stopped") else "")
        lines.append(
            f"| {m['condition']} | {m['profile']} | {tr['image_size']} | {_with_interval(t['roc_auc'], iv.get('roc_auc'))} "
            f"| {_num(t['recall'], 2)} / {_num(t['specificity'], 2)} | {epochs} | {_target_verdict(m['condition'], t['roc_auc'], iv.get('roc_auc'))} |"
        )
    lines += [
        "",
        "Own test splits; 95 % bootstrap intervals by patient; threshold fitted on val (Youden).",
        "",
        "Published references (`../shared/datasets/README.md`):",
        "",
    ]
    seen = []
    for m in nightly["models"]:
        if m["condition"] not in seen and m["condition"] in REFERENCES:
            seen.append(m["condition"])
            lines.append(f"- **{m['condition']}**: {REFERENCES[m['condition']]}")
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
        f"{f' ({scores})' if scores else ''}. No test image of any condition was read, and "
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
        "| condition | profile | from scratch | shared backbone: test AUC (95 % CI) | change | target |",
        "|---|---|--:|---|--:|---|",
    ]
    for m in shared["models"]:
        t, iv = m["test"], m["intervals"]
        old = before.get((m["condition"], m["profile"]))
        if m["status"] != "succeeded":
            lines.append(f"| {m['condition']} | {m['profile']} | {_num(old)} | {m['status']} | | |")
            continue
        change = "–" if old is None or t["roc_auc"] is None else f"{t['roc_auc'] - old:+.3f}"
        lines.append(
            f"| {m['condition']} | {m['profile']} | {_num(old)} | "
            f"{_with_interval(t['roc_auc'], iv.get('roc_auc'))} | {change} | "
            f"{_target_verdict(m['condition'], t['roc_auc'], iv.get('roc_auc'))} |"
        )
    run = shared["run"]
    done = sum(m["status"] == "succeeded" for m in shared["models"])
    lines += [
        "",
        f"The night (`{shared['config']}`): {done}/{len(shared['models'])} "
        f"models in {run['wall_seconds'] / 60:.1f} min wall, CPU busy {run['cpu_busy']:.0%}.",
    ]
    return "\n".join(lines) + "\n"
