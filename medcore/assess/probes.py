"""Does the model look at the patient? Shortcut probes and a saliency sanity check, run in the Grad-CAM stage.

Three probes, each with a stated rule and, when it fires, a finding (code, severity, count, message,
examples) that the report and the model card show:

- Empty film (`empty_film_positive`, warning; `empty_film_negative`, info). The calibrated probability
  of images with the patient removed: uniform grey at the set's mean, the set's mean image, each film
  blurred until no structure remains (Gaussian, sigma = half the side), and grey noise with the set's
  mean and spread. It fires when a kind's median probability is at least the median of the real
  positive films (the model calls an empty film diseased as surely as a typical diseased one); the
  negative direction (as surely normal as a typical normal film) is only information: "no finding"
  on an empty film is what a detector of findings should say, but then "normal" is no evidence of a
  normal lung.
- Border against centre (`border_shortcut`, warning). The test images (up to `images`, drawn within
  each class) scored with only the outer band kept (where text, markers and rulers sit) and with only
  the centre kept, the rest replaced by the set's mean image; ROC AUC of each with intervals from one
  paired, stratified bootstrap over patients (evaluation.bootstrap_weights). The border keeps a share
  (AUC_border - 0.5) / (AUC - 0.5) of the model's AUC above chance. It fires when the lower bound of
  that share's interval is at least `border_keep` (0.5): the border alone carries most of what the
  model uses, beyond sampling noise. On phantoms with a planted corner marker it fired in 20 of 20
  seeded runs, on clean phantoms in 0 of 20 (tests/assess/test_probes.py).
- Model randomisation (`saliency_insensitive`, warning), after Adebayo et al., "Sanity Checks for
  Saliency Maps" (NeurIPS 2018). Grad-CAM of the trained model against Grad-CAM after re-initialising
  (as Keras initialises them) the classifier head, then the head and the last dense block, `sanity_draws`
  times each. Per image, Spearman's rank correlation and SSIM between the maps as shown. It fires when,
  at any stage, the median rank correlation is at least `sanity_max_similarity` (the maps barely change:
  they do not show what the trained weights do), or when the model's own maps are blank (all zero after
  Grad-CAM's ReLU) on at least half the images; the overlays are then marked "not evidence". Map
  similarity alone cannot catch a model whose weights are themselves random: its Grad-CAM depends on its
  random head as much as a trained model's does on its trained one (four untrained DenseNet121s at 128 px:
  median Spearman against a fresh head -0.26 to 0.12, or blank maps). So the check also has a premise:
  it fires when the model's test ROC AUC interval (evaluation's, else the border probe's whole-film
  figure) reaches down to 0.5, for maps of a model at chance explain nothing about the films.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcore.assess.randomisation import global_ssim, map_similarity, randomised, sanity_check
from medcore.data.datasets import band_mask
from medcore.errors import MedcoreError

if TYPE_CHECKING:
    from medcore.assess.gradcam import GradCam
    from medcore.config import ProbeSettings

__all__ = [
    "EMPTY_KINDS",
    "empty_films",
    "empty_film_probe",
    "keep_region",
    "border_probe",
    "randomised",
    "map_similarity",
    "global_ssim",
    "sanity_check",
    "probe_findings",
    "run_probes",
    "render_probes_plot",
    "probe_sample",
    "weighted_auc",
]

EMPTY_KINDS = ("grey", "mean_image", "blurred", "noise")
EMPTY_WORDS = {
    "grey": "a uniform grey film",
    "mean_image": "the test set's mean image",
    "blurred": "films blurred until no structure remains",
    "noise": "grey noise",
}


# --------------------------------------------------------------------------- 1. empty films


def empty_films(images: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Images with the patient removed, at the statistics of `images` (N, H, W, 3) in 0-255."""
    import cv2

    images = np.asarray(images, dtype=np.float32)
    mean, spread = float(images.mean()), float(images.std())
    size = images.shape[1]
    sigma = size / 2.0  # at half the side no edge, rib or finding survives; the overall brightness does
    grey = np.full((1, *images.shape[1:]), mean, np.float32)
    noise = rng.normal(mean, spread, (len(images), *images.shape[1:3], 1)).astype(np.float32)
    return {
        "grey": grey,
        "mean_image": images.mean(axis=0, keepdims=True),
        "blurred": np.stack([cv2.GaussianBlur(image, (0, 0), sigma) for image in images]).reshape(images.shape),
        "noise": np.clip(np.repeat(noise, images.shape[3], axis=3), 0, 255),
    }


def empty_film_probe(
    probabilities: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    real: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """The calibrated probability of each kind of empty film against the real films' (`real`, with `labels`).

    A kind fires `positive` when its median probability is at least the median of the real positive
    films, `negative` when at most the median of the real negative films.
    """
    real, labels = np.asarray(real, dtype=np.float64), np.asarray(labels).astype(int)
    positive = float(np.median(real[labels == 1])) if (labels == 1).any() else None
    negative = float(np.median(real[labels == 0])) if (labels == 0).any() else None
    kinds = {}
    for kind, films in empty_films(images, np.random.default_rng(seed)).items():
        scores = np.asarray(probabilities(films), dtype=np.float64)
        median = float(np.median(scores))
        kinds[kind] = {
            "images": int(len(films)),
            "median_probability": median,
            "probabilities": [float(p) for p in scores[:16]],
            # Where the empty film would rank among the real films of each class (1.0: above every one).
            "above_real_positives": float((real[labels == 1] <= median).mean()) if positive is not None else None,
            "below_real_negatives": float((real[labels == 0] >= median).mean()) if negative is not None else None,
            "fires": "positive"
            if positive is not None and median >= positive
            else "negative"
            if negative is not None and median <= negative
            else None,
        }
    return {
        "rule": "a kind fires when its median calibrated probability is at least the real positive films' median "
        "(positive) or at most the real negative films' median (negative)",
        "real_positive_median": positive,
        "real_negative_median": negative,
        "real_films": int(len(real)),
        "kinds": kinds,
        "fires_positive": [k for k, v in kinds.items() if v["fires"] == "positive"],
        "fires_negative": [k for k, v in kinds.items() if v["fires"] == "negative"],
    }


# --------------------------------------------------------------------------- 2. border against centre


def keep_region(images: np.ndarray, keep: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """`images` where `keep` (H, W) is True, `fill` (H, W, C) elsewhere."""
    return np.where(keep[None, :, :, None], images, fill[None]).astype(np.float32)


def probe_sample(predictions: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """At most `count` test rows, drawn within each class in proportion (seeded); all of them if fewer."""
    if len(predictions) <= count:
        return predictions.reset_index(drop=True)
    share = count / len(predictions)
    parts = [
        rows.sample(n=max(1, int(round(len(rows) * share))), random_state=seed)
        for _, rows in predictions.groupby("label", sort=True)
    ]
    return pd.concat(parts).sort_index(kind="stable").reset_index(drop=True)


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of `weights` (resamples x images, as evaluation.bootstrap_weights draws them).

    The weighted Mann-Whitney statistic, ties counted half, as `evaluation.weighted_metrics` computes it,
    without the other figures: over 1000 resamples of 200 images it takes milliseconds, not seconds.
    """
    labels = np.asarray(labels).astype(bool)
    _, level = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    levels = np.zeros((len(level), level.max() + 1))
    levels[np.arange(len(level)), level] = 1.0  # image -> its score's rank among the distinct scores
    positive, negative = (weights * labels) @ levels, (weights * ~labels) @ levels
    below = np.cumsum(negative, axis=1) - negative
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, (positive * (below + 0.5 * negative)).sum(axis=1) / pairs, np.nan)


def border_probe(
    logits: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    intact: np.ndarray,
    *,
    groups: Sequence | np.ndarray | None = None,
    band: float = 0.125,
    keep: float = 0.5,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """ROC AUC with only the border band kept and with only the centre kept, against the intact images' (`intact`
    scores), on one paired stratified bootstrap; the rule in the module docstring."""
    from medcore.assess.metrics import bootstrap_weights

    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        raise MedcoreError("the border probe needs test images of both classes")
    images = np.asarray(images, dtype=np.float32)
    mask = band_mask(images.shape[1], band)
    scores = _region_scores(logits, images, intact, mask)
    rng = np.random.default_rng(seed)
    weights = np.vstack([np.ones((1, len(labels))), bootstrap_weights(len(labels), resamples, rng, groups, labels)])
    auc = {name: weighted_auc(labels, s, weights) for name, s in scores.items()}
    tail = 100.0 * (1.0 - confidence) / 2.0

    def interval(sample: np.ndarray) -> dict[str, float]:
        low, high = np.nanpercentile(sample, [tail, 100.0 - tail])
        return {"low": float(low), "high": float(high)}

    above = auc["full"] - 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(above > 0, (auc["border"] - 0.5) / above, np.nan)
        centre_share = np.where(above > 0, (auc["centre"] - 0.5) / above, np.nan)
    retained = float(share[0]) if np.isfinite(share[0]) else None
    share_low = interval(share[1:])["low"] if retained is not None else None
    fires = bool(above[0] > 0 and share_low is not None and share_low >= keep)
    return {
        "images": int(len(labels)),
        "positive": int(labels.sum()),
        "band": band,
        "band_pixels": int(max(1, round(band * images.shape[1]))),
        "band_share_of_image": float(mask.mean()),
        "fill": "the probe images' mean image",
        "roc_auc": {name: {"value": float(a[0]), **interval(a[1:])} for name, a in auc.items()},
        "border_share": {"value": retained, **interval(share[1:])} if retained is not None else None,
        "centre_share": {"value": float(centre_share[0]), **interval(centre_share[1:])}
        if np.isfinite(centre_share[0])
        else None,
        "keep": keep,
        "resamples": resamples,
        "confidence": confidence,
        "unit": "patient" if groups is not None else "image",
        "rule": f"fires when the lower bound of the border's share of the model's AUC above chance, "
        f"(AUC_border - 0.5) / (AUC - 0.5), is at least {keep:.0%}",
        "fires": fires,
    }


def _region_scores(
    logits: Callable[[np.ndarray], np.ndarray], images: np.ndarray, intact: np.ndarray, mask: np.ndarray
) -> dict[str, np.ndarray]:
    """The logits of the whole films (`intact`), of the border band alone and of the centre alone, the rest of
    each filled with the probe images' mean image."""
    fill = images.mean(axis=0)
    return {
        "full": np.asarray(intact, dtype=np.float64),
        "border": logits(keep_region(images, mask, fill)),
        "centre": logits(keep_region(images, ~mask, fill)),
    }


# --------------------------------------------------------------------------- findings, the stage part, the plot


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def probe_findings(probes: dict[str, Any]) -> list[dict[str, Any]]:
    """The probes' findings as data (code, severity, count, message, examples, sentence): `sentence` is the
    plain-language line for the report's first screen."""
    return [
        *_empty_film_findings(probes.get("empty_film") or {}),
        *_border_findings(probes.get("border") or {}),
        *_sanity_findings(probes.get("sanity") or {}),
    ]


def _empty_film_findings(empty: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for direction, severity in (("positive", "warning"), ("negative", "info")):
        kinds = empty.get(f"fires_{direction}") or []
        if not kinds:
            continue
        median = empty[f"real_{direction}_median"]
        shown = ", ".join(f"{k} p={empty['kinds'][k]['median_probability']:.2f}" for k in kinds)
        found.append(
            {
                "code": f"empty_film_{direction}",
                "severity": severity,
                "count": len(kinds),
                "examples": kinds,
                "message": f"films with no patient score as {direction} as a typical real {direction} film "
                f"(median p = {median:.2f}): {shown}",
                "sentence": "the model calls an empty film (no patient in it) diseased as surely as a real diseased "
                "film: it has learnt something other than the lung"
                if direction == "positive"
                else "an empty film scores as normal as a real normal film, so a 'normal' call is no evidence of a "
                "normal lung",
            }
        )
    return found


def _border_findings(border: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    if border.get("fires"):
        auc, share = border["roc_auc"], border["border_share"]
        found.append(
            {
                "code": "border_shortcut",
                "severity": "warning",
                "count": border["images"],
                "examples": [],
                "message": f"the outer {border['band']:.0%} band alone gives ROC AUC {auc['border']['value']:.2f} "
                f"({auc['border']['low']:.2f}–{auc['border']['high']:.2f}) against {auc['full']['value']:.2f} for the "
                f"whole film: it keeps {share['value']:.0%} of the AUC above chance; the centre alone gives "
                f"{auc['centre']['value']:.2f}",
                "sentence": "the film's border alone (where text, markers and rulers sit) gives most of the model's "
                "accuracy: it may be reading the hospital, not the patient",
            }
        )
    return found


def _sanity_findings(sanity: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    if sanity.get("fires"):
        stage = next((s for s in sanity["stages"] if s["stage"] == sanity["fired_stage"]), None)
        auc = sanity.get("model_auc") or {}
        if stage:
            why = (
                f"barely change when the {stage['stage']} is randomised (median Spearman "
                f"{stage['spearman_median']:.2f}, SSIM {_fmt(stage['ssim_median'])})"
            )
        elif sanity.get("blank"):
            why = f"are blank (nothing after Grad-CAM's ReLU) on {sanity['blank_share']:.0%} of the images"
        else:
            why = (
                f"explain a model that ranks the test images no better than chance (ROC AUC {_fmt(auc.get('value'))}, "
                f"{_fmt(auc.get('low'))}–{_fmt(auc.get('high'))}), as a model with random weights does"
            )
        found.append(
            {
                "code": "saliency_insensitive",
                "severity": "warning",
                "count": sanity["images"],
                "examples": [stage["stage"]] if stage else [],
                "message": f"Grad-CAM maps {why}, on {sanity['images']} images: the heatmaps are not evidence",
                "sentence": "its heatmaps look the same after the model's weights are scrambled (or show nothing, or "
                "explain a model at chance), so they do not show what the model used",
            }
        )
    return found


def run_probes(
    explainer: GradCam,
    predictions: pd.DataFrame,
    settings: ProbeSettings,
    *,
    resize: str,
    temperature: float,
    strongest: tuple[np.ndarray, np.ndarray],
    seed: int,
    resamples: int = 1000,
    confidence: float = 0.95,
    model_auc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The three probes on one model's test predictions; `strongest` are the deletion test's images and Grad-CAM
    maps (reused by the sanity check); `model_auc` the evaluation's test ROC AUC {value, low, high}, the sanity
    check's premise (without it, the border probe's whole-film AUC)."""
    from medcore.data.datasets import load_images

    start = time.perf_counter()
    size = explainer.image_shape[0]
    sample = probe_sample(predictions, settings.images, seed)
    images = load_images(sample["path"].tolist(), size, explainer.batch_size, resize)
    labels = sample["label"].to_numpy().astype(int)
    groups = sample["group"].astype(str).to_numpy() if "group" in sample.columns else None
    intact = _intact_logits(sample, temperature)
    timings = {}
    mark = time.perf_counter()
    empty = empty_film_probe(
        lambda films: explainer.probabilities(films, temperature),
        images[: settings.empty_film_images],
        predictions["probability"].to_numpy(),
        predictions["label"].to_numpy(),
        seed,
    )
    timings["empty_film"], mark = time.perf_counter() - mark, time.perf_counter()
    border = (
        border_probe(
            explainer.logits,
            images,
            labels,
            intact,
            groups=groups,
            seed=seed,
            **_border_settings(settings, resamples, confidence),
        )
        if len(np.unique(labels)) == 2
        else None
    )
    timings["border"], mark = time.perf_counter() - mark, time.perf_counter()
    whole = border["roc_auc"]["full"] if border else None
    sanity = _sanity(explainer, strongest, settings, seed, model_auc or whole)
    timings["sanity"] = time.perf_counter() - mark
    record: dict[str, Any] = {
        "empty_film": empty,
        "border": border,
        "sanity": sanity,
        "padding_note": PADDING_NOTE if resize == "pad" else None,
        "seconds": time.perf_counter() - start,
        "seconds_by_probe": timings,
    }
    record["findings"] = probe_findings(record)
    return record


PADDING_NOTE = "images are padded (resize: pad): the border band holds padding as well as film edges"


def _intact_logits(sample: pd.DataFrame, temperature: float) -> np.ndarray:
    """The sampled images' logits as scored in evaluation (from the calibrated probability where none is kept)."""
    return (
        sample["logit"].to_numpy(np.float64)
        if "logit" in sample.columns
        else temperature * np.log(sample["probability"] / (1 - sample["probability"]))
    )


def _border_settings(settings: ProbeSettings, resamples: int, confidence: float) -> dict[str, Any]:
    return {
        "band": settings.border_band,
        "keep": settings.border_keep,
        "resamples": resamples,
        "confidence": confidence,
    }


def _sanity(
    explainer: GradCam,
    strongest: tuple[np.ndarray, np.ndarray],
    settings: ProbeSettings,
    seed: int,
    model_auc: dict[str, Any] | None,
) -> dict[str, Any]:
    """The sanity check on the deletion test's images and Grad-CAM maps (`strongest`), as many as settings say."""
    strong_images, strong_maps = strongest
    count = settings.sanity_images
    return sanity_check(
        explainer,
        strong_images[:count],
        [(name, patterns) for name, patterns in settings.sanity_stages.items()],
        trained=strong_maps[:count],
        max_similarity=settings.sanity_max_similarity,
        draws=settings.sanity_draws,
        seed=seed,
        model_auc=model_auc,
    )


def render_probes_plot(probes: dict[str, Any], title: str = "") -> bytes:
    """Three panels as PNG bytes: AUC whole/border/centre with intervals, empty-film probabilities against the real
    films', and map similarity per randomisation stage."""
    from matplotlib.figure import Figure

    from medcore.assess.plots import png_bytes

    fig = Figure(figsize=(11, 3.6))
    left, middle, right = fig.subplots(1, 3)
    border = probes.get("border")
    if border:
        names = ["full", "border", "centre"]
        values = [border["roc_auc"][n]["value"] for n in names]
        errors = np.array(
            [[v - border["roc_auc"][n]["low"], border["roc_auc"][n]["high"] - v] for n, v in zip(names, values)]
        ).T
        colours = ["tab:blue", "tab:red" if border["fires"] else "tab:grey", "tab:green"]
        left.bar(
            ["whole film", f"border {border['band']:.0%}", "centre"], values, yerr=errors, capsize=4, color=colours
        )
        left.axhline(0.5, color="black", lw=0.8, ls="--")
        left.set(ylim=(0, 1), ylabel="test ROC AUC", title="Where the evidence lies")
    empty = probes.get("empty_film") or {}
    if empty.get("kinds"):
        kinds = list(empty["kinds"])
        middle.bar(kinds, [empty["kinds"][k]["median_probability"] for k in kinds], color="tab:purple")
        lines = (
            ("real_positive_median", "r", "--", "real positives"),
            ("real_negative_median", "b", ":", "real negatives"),
        )
        for key, colour, style, label in lines:
            if empty.get(key) is not None:
                middle.axhline(empty[key], color=colour, ls=style, label=f"{label} (median)")
        middle.set(ylim=(0, 1), ylabel="calibrated P(positive), median", title="Empty films")
        middle.legend(fontsize=7)
        middle.tick_params(axis="x", labelsize=7)
    sanity = probes.get("sanity") or {}
    if sanity.get("stages"):
        stages = [s["stage"] for s in sanity["stages"]]
        x = np.arange(len(stages))
        right.bar(x - 0.2, [s["spearman_median"] or 0.0 for s in sanity["stages"]], 0.4, label="Spearman")
        right.bar(x + 0.2, [s["ssim_median"] or 0.0 for s in sanity["stages"]], 0.4, label="SSIM")
        right.axhline(sanity["max_similarity"], color="black", lw=0.8, ls="--", label="fires at")
        right.set_xticks(x, [f"{s}\nrandomised" for s in stages], fontsize=7)
        right.set(ylim=(-0.5, 1), ylabel="median similarity to trained maps", title="Randomisation check")
        right.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return png_bytes(fig)
