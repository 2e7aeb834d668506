"""A model card per model (`model_card.md` beside `model.keras`), after Mitchell et al. 2019,
"Model Cards for Model Reporting": details, intended use, factors, metrics, evaluation and training
data, quantitative analyses, ethical considerations, caveats.

Every figure comes from the files the stages wrote (validation.json, training.json, metrics.json,
gradcam.json, model.json); a section whose file does not exist yet says so instead of guessing, so
the card written after evaluation is completed, not contradicted, by the one written after Grad-CAM.
Nothing from a DICOM header reaches the card except coded values (bit depth, photometric
interpretation, windowing source), which validation already reduced them to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcore.config import Condition, Config, Profile
from medcore.jsonio import atomic_write_text, read_json
from medcore.layout import ModelLayout
from medcore.report.jinja import environment

__all__ = ["render_model_card", "card_view", "write_model_card", "PREVALENCE_SHIFT"]

PREVALENCE_SHIFT = 0.05  # a positive share differing by more than this between train and test is named


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_json(path) if path.exists() else {}
    except ValueError:
        return {}


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _with_interval(metrics: dict[str, Any], name: str) -> str:
    interval = (metrics.get("intervals") or {}).get(name) or {}
    shown = _f(metrics.get(name))
    if interval.get("low") is not None:
        shown += f" ({_f(interval['low'])}–{_f(interval['high'])})"
    return shown


def _share(counts: dict[str, int]) -> float | None:
    total = counts.get("positive", 0) + counts.get("negative", 0)
    return counts.get("positive", 0) / total if total else None


def worse_than_chance(metrics: dict[str, Any]) -> bool:
    """The whole test ROC AUC interval below 0.5: the model ranks positives below negatives."""
    high = ((metrics.get("intervals") or {}).get("roc_auc") or {}).get("high")
    return isinstance(high, (int, float)) and high < 0.5


def _caveats(condition: Condition, validation: dict, metrics: dict, gradcam: dict) -> list[str]:
    """What a reader must know before trusting the figures: configured facts first, then measured ones."""
    found = list(condition.caveats)
    if worse_than_chance(metrics):
        found.insert(
            0,
            f"Worse than chance: test ROC AUC {_with_interval(metrics, 'roc_auc')}, the whole interval below 0.5. "
            "Do not use this model; check its labels and data.",
        )
    counts = validation.get("counts") or {}
    train, test = _share(counts.get("train") or {}), _share(counts.get("test") or {})
    if train is not None and test is not None and abs(train - test) > PREVALENCE_SHIFT:
        found.append(
            f"Train/test shift: positives are {train:.0%} of train but {test:.0%} of test, so threshold-"
            "dependent figures (precision, accuracy) do not carry over to another prevalence."
        )
    findings = validation.get("findings") or []
    if any(f["code"] == "groups_unknown" for f in findings):
        found.append(
            "No patient ids: images of one patient may sit in both train and test, which would make the "
            "test figures optimistic; this cannot be checked."
        )
    dropped = [f"{f['code']} {f['dropped']}" for f in findings if f.get("dropped")]
    if dropped:
        found.append(
            f"Validation dropped {sum(f['dropped'] for f in findings)} images ({', '.join(dropped)}); "
            "validation.json names each one."
        )
    kept = [f["code"] for f in findings if f.get("policy") == "warn" and f.get("severity") == "warning"]
    if kept:
        found.append(f"Kept despite warnings: {', '.join(kept)} (see validation.json).")
    quality = metrics.get("quality") or {}
    if quality.get("tier") == "insufficient" and quality.get("reason"):
        found.append(f"Test tier insufficient: {quality['reason']}.")
    faith = gradcam.get("faithfulness") or {}
    if faith and not faith.get("better_than_random") and not worse_than_chance(metrics):
        found.append(f"{faith.get('flag') or 'Grad-CAM deletes no better than a random map'}.")
    for finding in (gradcam.get("probes") or {}).get("findings") or []:
        if finding.get("severity") == "warning":
            found.append(f"Shortcut probe `{finding['code']}`: {finding['message']}.")
    return found


def _probe_lines(probes: dict[str, Any]) -> list[str]:
    """The shortcut probes' figures and verdicts (medcore.assess.probes states each rule)."""
    border, empty, sanity = probes.get("border"), probes.get("empty_film") or {}, probes.get("sanity") or {}
    lines = []
    if border:
        auc = border["roc_auc"]
        shown = {k: f"{_f(v['value'])} ({_f(v['low'])}–{_f(v['high'])})" for k, v in auc.items()}
        lines.append(
            f"- Border vs centre, {border['images']} test images, outer {border['band']:.0%} band: ROC AUC whole "
            f"{shown['full']}, border only {shown['border']}, centre only {shown['centre']}: "
            + ("**fires**" if border["fires"] else "does not fire")
            + f" ({border['rule']})."
        )
    if empty.get("kinds"):
        kinds = ", ".join(f"{k} {_f(v['median_probability'], 2)}" for k, v in empty["kinds"].items())
        lines.append(
            f"- Empty films (median calibrated probability): {kinds}; real positives "
            f"{_f(empty['real_positive_median'], 2)}, real negatives {_f(empty['real_negative_median'], 2)} "
            f"({empty['rule']})."
        )
    if sanity.get("stages"):
        stages = "; ".join(
            f"{s['stage']} randomised: Spearman {_f(s['spearman_median'], 2)}, SSIM {_f(s['ssim_median'], 2)}"
            for s in sanity["stages"]
        )
        lines.append(
            f"- Model randomisation ({sanity['images']} images): {stages}: "
            + _model_auc_clause(sanity)
            + ("**fires**, the overlays are not evidence" if sanity["fires"] else "does not fire")
            + f" ({sanity['rule']})."
        )
    lines += [f"- Finding `{f['code']}` ({f['severity']}): {f['message']}." for f in probes.get("findings") or []]
    return lines


def _model_auc_clause(sanity: dict[str, Any]) -> str:
    """The check's premise as read: the model's test ROC AUC interval, and whether it reaches down to chance."""
    auc = sanity.get("model_auc")
    if not auc:
        return ""
    where = "reaches chance" if sanity.get("at_chance") else "above chance"
    return f"model ROC AUC {_f(auc['value'])} ({_f(auc['low'])}–{_f(auc['high'])}, {where}): "


def _scored(metrics: dict[str, Any]) -> str:
    """What the figures count: test studies (MURA's unit), pooled out-of-fold images, or test images."""
    n, positive = metrics.get("n", "?"), metrics.get("n_positive", "?")
    if metrics.get("unit") == "study":
        return (
            f"{n} test studies ({positive} positive, {metrics.get('n_images', '?')} images); a study's probability "
            f"is the {metrics.get('study_aggregation', 'mean')} of its images', and every figure below is per study"
        )
    if metrics.get("estimate") == "cross-validation":
        return f"{n} images scored out of fold by cross-validation ({positive} positive)"
    return f"{n} test images ({positive} positive)"


def render_model_card(config: Config, condition: Condition, profile: Profile, paths: ModelLayout) -> str:
    """The card as Markdown, from whatever artefacts of the model exist now (templates/model_card.md.j2)."""
    env = environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.get_template("model_card.md.j2").render(**card_view(config, condition, profile, paths))


def card_view(config: Config, condition: Condition, profile: Profile, paths: ModelLayout) -> dict[str, Any]:
    """Every value the card shows, as the template prints it, read from the model's files."""
    validation, training = _read(paths.validation_json), _read(paths.training_json)
    metrics, gradcam = _read(paths.metrics_json), _read(paths.gradcam_json)
    groups, totals = validation.get("groups") or {}, validation.get("totals") or {}
    return {
        **_details_view(config, profile, training, _read(paths.model_contract)),
        "run_id": paths.root.parent.parent.name,
        "condition": condition.name,
        "condition_words": condition.name.replace("_", " "),
        "dataset": condition.dataset,
        "positive": ", ".join(condition.positive),
        "negative": ", ".join(condition.negative),
        "excluded": ", ".join(condition.exclude),
        "groups_source": groups.get("source", "n/a"),
        "groups": groups.get("groups"),
        "fingerprint": validation.get("fingerprint") or training.get("dataset_fingerprint", "n/a"),
        "totals": {key: totals.get(key, "n/a") for key in ("listed", "excluded", "dropped", "in_manifest")},
        "splits": [
            (split, c.get("positive", 0), c.get("negative", 0)) for split, c in (validation.get("counts") or {}).items()
        ],
        **_preprocessing_view(profile, training, validation),
        "metrics": _metrics_view(metrics) if metrics else None,
        "faithfulness": _faithfulness_view(gradcam.get("faithfulness") or {}, metrics),
        "probes": _probe_lines(gradcam["probes"]) if gradcam.get("probes") else [],
        "caveats": _caveats(condition, validation, metrics, gradcam),
    }


def _details_view(config: Config, profile: Profile, training: dict, contract: dict) -> dict[str, Any]:
    """The model details: architecture, input, training and the decision threshold."""
    return {
        "profile": profile.name,
        "architecture": contract.get("architecture", "DenseNet121"),
        "size": training.get("image_size") or profile.image_size,
        "preprocessing": contract.get("preprocessing", "normalisation inside the model"),
        "epochs_run": training.get("epochs_run", "?"),
        "epochs_planned": training.get("epochs_planned", profile.epochs),
        "weights": training.get("weights_used") or training.get("weights") or profile.weights,
        "seed": training.get("seed", config.seed),
        "precision": training.get("precision", profile.precision),
        "warm_start": _warm_start_words(training.get("warm_start")),
        "threshold": _f(contract.get("threshold")),
        "threshold_rule": contract.get("threshold_rule", "n/a"),
        "threshold_split": contract.get("threshold_split", "val"),
    }


def _preprocessing_view(profile: Profile, training: dict, validation: dict) -> dict[str, Any]:
    """Resizing, the source images' median size, DICOM handling and the training augmentation, as the card says it."""
    stats, augmentation = validation.get("image_stats") or {}, profile.augmentation
    erased = (
        f", outer {augmentation.border_band:.0%} band erased on {augmentation.border_erase:.0%} of images"
        if augmentation.border_erase
        else ""
    )
    return {
        "padded": (training.get("resize") or profile.resize) == "pad",
        "source_size": f"{_f(stats.get('median_width'), 0)}×{_f(stats.get('median_height'), 0)}",
        "dicom": next((f["message"] for f in validation.get("findings") or [] if f["code"] == "dicom_summary"), None),
        "augmentation": f"rotation {augmentation.rotation}, zoom {augmentation.zoom}, contrast "
        f"{augmentation.contrast}, horizontal flip {'on' if augmentation.horizontal_flip else 'off'}{erased}",
    }


# The test figures the card's table shows, in its order, with the names a reader knows them by.
CARD_FIGURES = (
    ("roc_auc", "ROC AUC"),
    ("pr_auc", "PR AUC"),
    ("recall", "sensitivity"),
    ("specificity", "specificity"),
    ("precision", "precision"),
    ("accuracy", "accuracy"),
    ("f1", "F1"),
)


def _metrics_view(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test figures with their intervals, what they count, and calibration."""
    boot = metrics.get("bootstrap") or {}
    rows = [(label, _with_interval(metrics, name)) for name, label in CARD_FIGURES]
    image_level = metrics.get("image_level")
    if isinstance(image_level, dict) and image_level.get("roc_auc") is not None:
        rows.append((f"ROC AUC per image ({image_level.get('n', '?')} images)", _with_interval(image_level, "roc_auc")))
    return {
        "scored": _scored(metrics),
        "percent": int(100 * boot.get("confidence", 0.95)),
        "resamples": boot.get("resamples", "?"),
        "unit": boot.get("unit", "image"),
        "threshold_split": metrics.get("threshold_split") or "val",
        "tier": (metrics.get("quality") or {}).get("tier", "n/a"),
        "worse_than_chance": worse_than_chance(metrics),
        "rows": rows,
        "brier": _with_interval(metrics, "brier"),
        "calibration_error": _with_interval(metrics, "calibration_error"),
    }


def _faithfulness_view(faith: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The deletion test's figures and what they mean (nothing, if the model is worse than chance)."""
    if not faith:
        return None
    if faith.get("better_than_random") and worse_than_chance(metrics):
        verdict = (
            "better than random, but the model is worse than chance, so its heatmaps are not evidence of anything."
        )
    elif faith.get("better_than_random"):
        verdict = "better than random."
    else:
        verdict = "**not better than random**; its heatmaps are not evidence of what the model looks at."
    return {
        "images": faith.get("images"),
        "steps": faith.get("steps"),
        "baseline": faith.get("baseline"),
        "gradcam": _f(faith.get("gradcam_deletion_auc")),
        "random": _f(faith.get("random_deletion_auc")),
        "verdict": verdict,
    }


def write_model_card(config: Config, condition: Condition, profile: Profile, paths: ModelLayout) -> Path:
    """Write `model_card.md` beside the model (atomically) and return its path."""
    return atomic_write_text(paths.model_card, render_model_card(config, condition, profile, paths))


def _warm_start_words(warm: dict[str, Any] | None) -> str | None:
    """How a warm start treated the champion's weights (medcore.model.warmstart), or None for a scratch training."""
    if not warm:
        return None
    if warm.get("method") == "shrink_perturb":
        bn = (
            f"batch norm statistics re-estimated on {warm.get('batch_norm_batches')} train batches"
            if warm.get("batch_norm") == "reestimate"
            else "batch norm statistics kept"
        )
        shrink, perturb = warm.get("shrink"), warm.get("perturb")
        how = f"shrink and perturb (weights × {shrink} + {perturb} × a fresh initialisation; {bn})"
    else:
        how = "the champion's weights as they were"
    growth = warm.get("growth")
    new = f"; {growth:.0%} of the train images were new to it" if growth is not None else ""
    rewarm = f"; rate re-warmed over {warm['rewarm']:.0%} of the steps" if warm.get("rewarm") else ""
    return f"{how}{new}{rewarm}"
