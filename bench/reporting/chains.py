"""Nights that build on each other (policies and seeds) and the resize comparison."""

from __future__ import annotations

import statistics
from typing import Any

from bench.reporting.common import _num, _with_interval


def _nights_intro(nights: dict[str, Any]) -> str:
    scale = (
        "the full sets"
        if nights["fraction"] >= 1.0
        else f"a keyed-hash {nights['fraction']:.0%} of each set's patients (reduced scale)"
    )
    epochs = f"{nights['epochs']} epochs per model" if nights.get("epochs") else "each profile's epochs"
    share = nights.get("continue_learning_rate")  # recorded since the warm start's rate became a setting
    rate = f" at {share:.0%} of the profile's learning rate" if share is not None else ""
    return (
        f"On {scale}: {', '.join(nights['conditions'])} × "
        f"{', '.join(nights['profiles'])}, {epochs} (a warm start trains {nights['continue_epochs']:.0%} of "
        f"them{rate}), train images arriving in steps of {', '.join(f'{s:.0%}' for s in nights['steps'])}; val and "
        "test fixed. CPU: the night process's own minutes. Per-night rows: the JSON file."
    )


def _gate_verdicts(nights: dict[str, Any]) -> list[str]:
    """No image changed split; no promotion lowered the champion by more than the margin."""
    found = [c for r in nights["policies"].values() for n in r["nights"] for c in n["conditions"].values()]
    moved = [c["moved_since_last_night"] or 0 for c in found] + [c["moved_since_full_split"] or 0 for c in found]
    deltas = [
        c["paired_selection_delta"]
        for c in found
        if c["decision"] == "promoted" and c["paired_selection_delta"] is not None
    ]
    return [
        f"no image changed split: {'met' if not any(moved) else f'missed ({sum(moved)} moves)'}",
        "no promotion lowered the champion's selection AUC by more than the margin "
        f"({nights['margin']:.2f}): "
        + ("met" if all(d >= -nights["margin"] for d in deltas) else "missed")
        + (f" (worst paired difference {min(deltas):+.3f})" if deltas else " (no promotion over a champion)"),
    ]


def _policy_verdicts(nights: dict[str, Any]) -> list[str]:
    """Continue against retrain: CPU minutes, and each condition's final champions."""
    policies = nights["policies"]
    cheap = policies["continue"]["cpu_minutes"] <= policies["retrain"]["cpu_minutes"] / 2
    ratio = policies["continue"]["cpu_minutes"] / policies["retrain"]["cpu_minutes"]
    verdicts = [f"continue used {ratio:.2f}× retrain's CPU minutes (target ≤ 0.5): {'met' if cheap else 'missed'}"]
    finals = {p: policies[p]["nights"][-1]["conditions"] for p in ("retrain", "continue")}
    paired = nights.get("final_paired") or {}
    for condition in finals["retrain"]:
        a = finals["continue"][condition]["champion_after_test_auc"]
        b = finals["retrain"][condition]["champion_after_test_auc"]
        if condition in paired:
            verdicts.append(f"{condition}: {_final_pair(paired[condition])}")
        elif a is not None and b is not None:
            verdicts.append(
                f"{condition}: continue's final champion {a:.3f} vs retrain's {b:.3f} ({'reached' if a >= b else 'below'})"
            )
    return verdicts


def nights_table(nights: dict[str, Any]) -> str:
    """Four nights per policy: cost, plan, decision and champion per night; then the targets, judged on the figures."""
    policies = nights["policies"]
    lines = [_nights_intro(nights), ""]
    lines += ["| policy | CPU min, all nights | wall min, all nights | final champion test AUC |", "|---|--:|--:|---|"]
    for policy, record in policies.items():
        last = record["nights"][-1]["conditions"]
        finals = ", ".join(f"{c} {_num(r['champion_after_test_auc'])}" for c, r in last.items())
        lines.append(f"| {policy} | {record['cpu_minutes']:.1f} | {record['wall_minutes']:.1f} | {finals} |")
    verdicts = _gate_verdicts(nights)
    if {"retrain", "continue"} <= set(policies):
        verdicts += _policy_verdicts(nights)
    lines += ["", *[f"- {v}" for v in verdicts]]
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
    """The same nights repeated with other seeds: the spread of continue − retrain over seeds, which one seed
    cannot show. Per-seed figures stay in the JSON files."""
    deltas: dict[tuple[str, float], list[float]] = {}
    for _name, run in runs:
        if {"retrain", "continue"} <= set(run["policies"]) and run.get("final_paired"):
            for condition, d in run["final_paired"].items():
                deltas.setdefault((condition, run["fraction"]), []).append(d["delta"])
    lines = [
        f"Final champions, continue − retrain, paired on test; seeds from {', '.join(f'`{n}`' for n, _ in runs)}.",
        "",
    ]
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
        f"Profile `{resize['profile']}` ({resize['image_size']} px, {epochs_text}) on {scale}, trained from "
        "scratch with `resize: squash` (stretched) and with `resize: pad` (aspect kept, black padding masked out "
        "of Grad-CAM), same images and split.",
        "",
    ]
    for variant, record in resize["variants"].items():
        if record.get("reused"):
            lines[-1:-1] = [
                f"The `{variant}` models were not trained again: they are those of `{record['run_folder']}` "
                "(same profile, data and seed; its wall time covers all it ran).",
            ]
    for condition, a in resize["aspect"].items():
        w = a.get("width_over_height")
        if not w:
            lines.append(f"- **{condition}**: no image header could be read ({a['unread']} files).")
            continue
        lines.append(
            f"- **{condition}** images, width / height: mean {w['mean']:.2f}, median {w['median']:.2f}, "
            f"{w['min']:.2f}–{w['max']:.2f} ({a['read']:,} of {a['images']:,} read); "
            f"{a['square_within_5pct']:.0%} within 5 % of square; {a['padding']:.0%} padding on average."
        )
    lines += ["", *_resize_rows(resize), ""]
    lines += _paired_lines(resize)
    lines += [
        "",
        "Run wall: the whole `medcore run`; 95 % bootstrap intervals by patient.",
    ]
    return "\n".join(lines) + "\n"


def _resize_rows(resize: dict[str, Any]) -> list[str]:
    lines = [
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
    return lines


def _paired_lines(resize: dict[str, Any]) -> list[str]:
    lines = ["Paired pad − squash ROC AUC:", ""]
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
    return lines
