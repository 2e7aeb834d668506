"""The saliency sanity check (probe 3 of medcore.assess.probes): Grad-CAM of the trained model against Grad-CAM
after cascading re-initialisation of its top layers (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

The rule and what it catches are in medcore.assess.probes' docstring.
"""

from __future__ import annotations

import contextlib
import fnmatch
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medcore.errors import MedcoreError

if TYPE_CHECKING:
    from medcore.assess.gradcam import GradCam

__all__ = ["randomised", "global_ssim", "map_similarity", "sanity_check"]


def _matching_layers(model, patterns: Sequence[str]) -> list:
    found = []
    for pattern in patterns:
        layers = [layer for layer in model.layers if fnmatch.fnmatchcase(layer.name, pattern) and layer.weights]
        if not layers:
            raise MedcoreError(
                f"gradcam.probes.sanity_stages: {pattern!r} matches no layer with weights in model {model.name!r}"
            )
        found += [layer for layer in layers if layer not in found]
    return found


def _fresh(layer, variable, rng: np.random.Generator) -> np.ndarray:
    """A new value for `variable` of `layer`, drawn as Keras initialises it (the layer's own initializer, seeded)."""
    import keras

    shape, dtype = tuple(variable.shape), str(variable.dtype)
    name = str(getattr(variable, "name", "")).split("/")[-1].split(":")[0]
    initializer = getattr(layer, f"{name}_initializer", None)
    if initializer is None:  # no initializer to follow: centred noise at the trained tensor's spread
        value = np.asarray(variable.numpy())
        return rng.normal(0.0, float(value.std()) or 1.0, shape).astype(dtype)
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = int(rng.integers(2**31 - 1))
    return np.asarray(keras.ops.convert_to_numpy(initializer.__class__.from_config(config)(shape, dtype=dtype)))


@contextlib.contextmanager
def randomised(model, patterns: Sequence[str], rng: np.random.Generator) -> Iterator[int]:
    """Within the block, every weight of the layers `patterns` match is re-initialised as Keras initialises it
    (Adebayo et al.'s randomisation); restored after.

    Re-initialised, not permuted: a permuted head keeps the sum of its weights, and with it the part
    of Grad-CAM that every channel shares. The variables are assigned in place, so a `GradCam`
    compiled on `model` sees the change without a new trace. Yields how many weights were drawn.
    """
    layers = _matching_layers(model, patterns)
    saved = [(layer, v, np.array(v.numpy())) for layer in layers for v in layer.weights]
    try:
        for layer, variable, _ in saved:
            variable.assign(_fresh(layer, variable, rng))
        yield int(sum(value.size for _, _, value in saved))
    finally:
        for _, variable, value in saved:
            variable.assign(value)


def global_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """SSIM of each pair of maps over the whole map as one window (Wang et al. 2004, constants K1=0.01, K2=0.03).

    Grad-CAM maps are 7 x 7 at 224 px: the usual 7 x 7 sliding window is the whole map anyway.
    """
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ma, mb = a.mean(axis=1), b.mean(axis=1)
    va, vb = a.var(axis=1), b.var(axis=1)
    cov = ((a - ma[:, None]) * (b - mb[:, None])).mean(axis=1)
    return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair of maps, Spearman's rank correlation; 1 if both are flat, 0 if one is."""
    from scipy.stats import spearmanr

    rho = []
    for x, y in zip(np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)):
        flat_x, flat_y = np.ptp(x) == 0, np.ptp(y) == 0
        rho.append((1.0 if flat_x and flat_y else 0.0) if flat_x or flat_y else float(spearmanr(x, y).statistic))
    return np.array(rho)


def map_similarity(trained: np.ndarray, randomised: np.ndarray) -> dict[str, np.ndarray]:
    """Per pair of signed Grad-CAM maps (before the ReLU): Spearman of their absolute values (Adebayo et al.'s
    measure, blind to the arbitrary sign a random head gives), Spearman and SSIM of the maps as shown (ReLU,
    peak 1)."""
    shown = []
    for maps in (trained, randomised):
        positive = np.maximum(np.asarray(maps, np.float64), 0.0)
        peaks = positive.reshape(len(positive), -1).max(axis=1).reshape(-1, 1, 1)
        shown.append(positive / np.where(peaks > 0, peaks, 1.0))
    return {
        "spearman_abs": _spearman(np.abs(trained), np.abs(randomised)),
        "spearman_shown": _spearman(*shown),
        "ssim_shown": global_ssim(shown[0], shown[1]),
    }


def _blank(maps: np.ndarray) -> np.ndarray:
    """Per map, whether Grad-CAM shows nothing: no positive value after its ReLU."""
    return np.asarray(maps).reshape(len(maps), -1).max(axis=1) <= 0


def _stage_similarity(
    explainer: GradCam,
    images: np.ndarray,
    trained: np.ndarray,
    own_blank: np.ndarray,
    patterns: Sequence[str],
    draws: int,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per draw, Spearman and SSIM of the maps as shown (NaN where either map is blank) and Spearman of their
    absolute values, after randomising every layer `patterns` match."""
    rho, ssim, absolute = [], [], []
    for _ in range(draws):
        with contextlib.ExitStack() as stack:
            for earlier in patterns:  # cumulative: this stage and every one above it, drawn afresh
                stack.enter_context(randomised(explainer.model, [earlier], rng))
            maps = explainer.signed_maps(images)[0]
        similarity = map_similarity(trained, maps)
        usable = ~(own_blank | _blank(maps))
        rho.append(np.where(usable, similarity["spearman_shown"], np.nan))
        ssim.append(np.where(usable, similarity["ssim_shown"], np.nan))
        absolute.append(similarity["spearman_abs"])
    return rho, ssim, absolute


def _at_chance(model_auc: Mapping[str, Any] | None) -> bool:
    """Whether the model's ROC AUC interval reaches down to 0.5 (False when no interval is known)."""
    low = (model_auc or {}).get("low")
    return low is not None and float(low) <= 0.5


def sanity_check(
    explainer: GradCam,
    images: np.ndarray,
    stages: Sequence[tuple[str, Sequence[str]]],
    *,
    trained: np.ndarray | None = None,
    max_similarity: float = 0.5,
    draws: int = 3,
    seed: int = 0,
    model_auc: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Grad-CAM of the model against Grad-CAM after cascading randomisation of `stages` (name, layer patterns),
    top first, `draws` independent randomisations per stage; the rule in the module docstring. `trained`: the
    model's own signed maps of `images`, if already made.

    A blank map (all zero after the ReLU) has no ranks to compare: a pair with one is left out. Where the
    model's own maps are blank on at least half the images the check fires outright: they show nothing.
    `model_auc` ({value, low, high}: the model's test ROC AUC and its interval) is the check's premise: a
    model that ranks the test images no better than chance (low <= 0.5) is indistinguishable from one with
    random weights, whose maps change under randomisation like any other's; the check fires for it too.
    """
    if trained is None:
        trained = explainer.signed_maps(images)[0]
    rng = np.random.default_rng(seed)
    own_blank = _blank(trained)
    results, patterns = [], []
    for name, stage in stages:
        patterns += list(stage)
        rho, ssim, absolute = _stage_similarity(explainer, images, trained, own_blank, patterns, draws, rng)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an image with no usable pair is NaN, as meant
            per_image, per_image_ssim = np.nanmean(rho, axis=0), np.nanmean(ssim, axis=0)
            median = float(np.nanmedian(per_image)) if np.isfinite(per_image).any() else None
        results.append(
            {
                "stage": name,
                "layers": list(patterns),
                "draws": draws,
                "compared_pairs": int(np.isfinite(rho).sum()),
                "spearman_median": median,
                "ssim_median": float(np.nanmedian(per_image_ssim)) if np.isfinite(per_image_ssim).any() else None,
                "spearman_abs_median": float(np.median(np.mean(absolute, axis=0))),
                "unchanged": bool(median is not None and median >= max_similarity),
                "spearman": [None if not np.isfinite(x) else round(float(x), 4) for x in per_image],
            }
        )
    blank_share = float(own_blank.mean()) if len(own_blank) else 0.0
    fired = [r["stage"] for r in results if r["unchanged"]]
    at_chance = _at_chance(model_auc)
    return {
        "images": int(len(images)),
        "method": "cascading randomisation (Adebayo et al. 2018): each stage re-initialises its layers and every one "
        f"above it as Keras initialises them, {draws} independent draws; maps compared as shown (after Grad-CAM's "
        "ReLU), pairs with a blank map left out",
        "stages": results,
        "max_similarity": max_similarity,
        "blank_share": blank_share,
        "rule": f"fires when, at any stage, the median Spearman rank correlation between the model's maps and the "
        f"randomised models' maps is at least {max_similarity:g} (the maps barely change), or the model's own maps "
        "are blank on at least half the images, or the model's test ROC AUC interval reaches down to 0.5 (it ranks "
        "no better than chance, as a model with random weights does)",
        "blank": blank_share >= 0.5,
        "model_auc": dict(model_auc) if model_auc else None,
        "at_chance": at_chance,
        "fires": bool(fired) or blank_share >= 0.5 or at_chance,
        "fired_stage": fired[0] if fired else None,
    }
