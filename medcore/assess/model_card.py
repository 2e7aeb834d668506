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

__all__ = ["render_model_card", "write_model_card", "PREVALENCE_SHIFT"]

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
            + ("**fires**, the overlays are not evidence" if sanity["fires"] else "does not fire")
            + f" ({sanity['rule']})."
        )
    lines += [f"- Finding `{f['code']}` ({f['severity']}): {f['message']}." for f in probes.get("findings") or []]
    return lines


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
    """The card as Markdown, from whatever artefacts of the model exist now."""
    validation, training = _read(paths.validation_json), _read(paths.training_json)
    metrics, gradcam, contract = _read(paths.metrics_json), _read(paths.gradcam_json), _read(paths.model_contract)
    counts, totals = validation.get("counts") or {}, validation.get("totals") or {}
    stats, groups = validation.get("image_stats") or {}, validation.get("groups") or {}
    size = training.get("image_size") or profile.image_size
    lines = [
        f"# Model card: {condition.name} / {profile.name}",
        "",
        f"Run `{paths.root.parent.parent.name}`. After Mitchell et al. 2019, *Model Cards for Model Reporting*. "
        "**Research use only.**",
        "",
    ]

    lines += [
        "## Model details",
        "",
        f"- {contract.get('architecture', 'DenseNet121')} binary classifier, one logit (sigmoid = P(positive)), "
        f"input {size}×{size}×3 in 0–255, {contract.get('preprocessing', 'normalisation inside the model')}.",
        f"- Trained by medcore: profile `{profile.name}`, {training.get('epochs_run', '?')} of "
        f"{training.get('epochs_planned', profile.epochs)} epochs, weights from "
        f"`{training.get('weights_used') or training.get('weights') or profile.weights}`, seed "
        f"{training.get('seed', config.seed)}, {training.get('precision', profile.precision)}.",
        *_warm_start_line(training.get("warm_start")),
        f"- Decision threshold {_f(contract.get('threshold'))} ({contract.get('threshold_rule', 'n/a')}, chosen "
        f"on {contract.get('threshold_split', 'val')}); files: `model.keras`, `model.json` beside this card.",
        "",
    ]

    lines += [
        "## Intended use",
        "",
        f"- Primary: research on automated {condition.name.replace('_', ' ')} classification of radiographs like "
        f"the training set (dataset `{condition.dataset}`), and on the retraining pipeline itself.",
        "- Out of scope: diagnosis, triage, screening or any decision about a patient; images from other "
        "populations, body parts, views, devices or hospitals than the training data; use without checking "
        "the caveats below. No figure here shows fitness for clinical use.",
        "",
    ]

    lines += [
        "## Labels and factors",
        "",
        f"- Positive: {', '.join(condition.positive)}; negative: {', '.join(condition.negative)}"
        + (f"; excluded (never seen): {', '.join(condition.exclude)}" if condition.exclude else "")
        + ".",
        f"- Groups (patients): {groups.get('source', 'n/a')}"
        + (f", {groups['groups']} groups" if groups.get("groups") else "")
        + "; splits keep each group whole.",
        "- Not evaluated per subgroup (age, sex, device, site): the data carry no such fields.",
        "",
    ]

    lines += [
        "## Training and evaluation data",
        "",
        f"- Dataset fingerprint `{validation.get('fingerprint') or training.get('dataset_fingerprint', 'n/a')}` "
        "(file list, labels and every file's bytes).",
        f"- Listed {totals.get('listed', 'n/a')}, excluded {totals.get('excluded', 'n/a')}, dropped by "
        "validation "
        f"{totals.get('dropped', 'n/a')}, used {totals.get('in_manifest', 'n/a')}.",
        "",
        "| split | positive | negative |",
        "|---|---:|---:|",
    ]
    lines += [f"| {split} | {c.get('positive', 0)} | {c.get('negative', 0)} |" for split, c in counts.items()]
    dicom = next((f["message"] for f in validation.get("findings") or [] if f["code"] == "dicom_summary"), None)
    lines += [
        "",
        "## Preprocessing",
        "",
        f"- Decoded once, resized to {size}×{size} (antialiased bilinear; "
        + (
            "the aspect ratio is kept and the rest of the square padded with black, which Grad-CAM masks out: "
            if (training.get("resize") or profile.resize) == "pad"
            else "the aspect ratio is not kept: "
        )
        + f"source images are {_f(stats.get('median_width'), 0)}×{_f(stats.get('median_height'), 0)} px median), "
        "gray copied to three channels, pixel values 0–255.",
        "- DICOM: Rescale Slope/Intercept, then the VOI LUT or first window (else the image's own range), "
        "MONOCHROME1 inverted, in float32 until this scaling"
        + (f"; here: {dicom}." if dicom else "; this set holds no DICOM."),
        f"- Augmentation in training only: rotation {profile.augmentation.rotation}, zoom "
        f"{profile.augmentation.zoom}, contrast {profile.augmentation.contrast}, horizontal flip "
        f"{'on' if profile.augmentation.horizontal_flip else 'off'}"
        + (
            f", outer {profile.augmentation.border_band:.0%} band erased on {profile.augmentation.border_erase:.0%} "
            "of images"
            if profile.augmentation.border_erase
            else ""
        )
        + ".",
        "",
    ]

    lines += ["## Metrics on the test split", ""]
    if metrics:
        boot = metrics.get("bootstrap") or {}
        lines += [
            f"{_scored(metrics)}; {int(100 * boot.get('confidence', 0.95))} % intervals from "
            f"{boot.get('resamples', '?')} bootstrap resamples of {boot.get('unit', 'image')}s; threshold fixed on "
            f"{metrics.get('threshold_split') or 'val'}. Test tier: "
            f"**{(metrics.get('quality') or {}).get('tier', 'n/a')}** (on the test ROC AUC interval's lower "
            "bound)."
            + (
                " **Worse than chance**: the whole ROC AUC interval lies below 0.5."
                if worse_than_chance(metrics)
                else ""
            ),
            "",
            "| figure | value (interval) |",
            "|---|---|",
        ]
        lines += [
            f"| {label} | {_with_interval(metrics, name)} |"
            for name, label in (
                ("roc_auc", "ROC AUC"),
                ("pr_auc", "PR AUC"),
                ("recall", "sensitivity"),
                ("specificity", "specificity"),
                ("precision", "precision"),
                ("accuracy", "accuracy"),
                ("f1", "F1"),
            )
        ]
        image_level = metrics.get("image_level")
        if isinstance(image_level, dict) and image_level.get("roc_auc") is not None:
            lines.append(
                f"| ROC AUC per image ({image_level.get('n', '?')} images) | {_with_interval(image_level, 'roc_auc')} |"
            )
        lines += [
            "",
            "## Calibration",
            "",
            f"- Brier score {_with_interval(metrics, 'brier')}, expected calibration error "
            f"{_with_interval(metrics, 'calibration_error')} (lower is better); reliability plot "
            "`plots/calibration.png` in the run.",
            "",
        ]
    else:
        lines += ["Not evaluated yet (no metrics.json).", ""]

    faith = gradcam.get("faithfulness") or {}
    lines += ["## Grad-CAM faithfulness", ""]
    if faith:
        lines += [
            f"Deletion test on the {faith.get('images')} most positive test images, {faith.get('steps')} steps, "
            f"{faith.get('baseline')} baseline (lower area = more faithful): Grad-CAM "
            f"{_f(faith.get('gradcam_deletion_auc'))} vs random maps {_f(faith.get('random_deletion_auc'))}: "
            + (
                "better than random, but the model is worse than chance, so its heatmaps are not evidence of anything."
                if faith.get("better_than_random") and worse_than_chance(metrics)
                else "better than random."
                if faith.get("better_than_random")
                else "**not better than random**; its heatmaps are not evidence of what the model looks at."
            ),
            "",
        ]
    else:
        lines += ["Not measured yet (no gradcam.json).", ""]
    probes = gradcam.get("probes")
    lines += ["## Shortcut probes", ""]
    lines += (
        _probe_lines(probes) if probes else ["Not run (no gradcam.json, or `gradcam.probes.enabled` is false)."]
    ) + [""]

    lines += [
        "## Ethical considerations",
        "",
        "- Patient data: DICOM headers are reduced to coded values; patient and study ids exist here only as "
        "keyed hashes. Pixels are shown in Grad-CAM overlays, so files declaring burned-in annotation are "
        "dropped by default.",
        "- A model trained from scratch on a few thousand images at low resolution can rely on shortcuts "
        "(text markers, devices, positioning); Grad-CAM and the deletion test are a first check, not proof.",
        "",
    ]

    caveats = _caveats(condition, validation, metrics, gradcam)
    lines += ["## Caveats and recommendations", ""]
    lines += [f"- {c}" for c in caveats] or ["- None recorded beyond the out-of-scope uses above."]
    return "\n".join(lines) + "\n"


def write_model_card(config: Config, condition: Condition, profile: Profile, paths: ModelLayout) -> Path:
    """Write `model_card.md` beside the model (atomically) and return its path."""
    return atomic_write_text(paths.model_card, render_model_card(config, condition, profile, paths))


def _warm_start_line(warm: dict[str, Any] | None) -> list[str]:
    """How a warm start treated the champion's weights (medcore.model.warmstart), or nothing for a scratch training."""
    if not warm:
        return []
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
    return [f"- Warm-started from the champion: {how}{new}{rewarm}."]
