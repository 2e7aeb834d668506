"""Whether Grad-CAM's heatmaps are evidence: deletion curves against random maps, and the pointing game.

Faithfulness is measured with a deletion curve: the most salient pixels are replaced by a
baseline (the blurred image, or its mean) in equal steps while the model's logit is recorded. A
map that points at what the model uses makes the score fall early (small area under the curve);
the curves of several random maps of the same resolution are the chance level it has to beat,
image by image, with a paired one-sided Wilcoxon test. The logit, not P(positive): a confident
model's probability stays at 0.9999 whatever is deleted, and the verdict would be float noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from medcore.assess.gradcam import GradCam

__all__ = [
    "upsample",
    "random_maps",
    "deletion_order",
    "baseline_images",
    "deletion_curves",
    "curve_area",
    "faithfulness",
    "pointing_game",
    "render_deletion_plot",
]


def upsample(heatmaps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize (N, h, w) maps to (N, height, width), as the overlay shows them."""
    import cv2

    height, width = size
    return (
        np.stack([cv2.resize(m.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) for m in heatmaps])
        if len(heatmaps)
        else np.zeros((0, height, width), np.float32)
    )


def random_maps(rng: np.random.Generator, count: int, shape: tuple[int, int]) -> np.ndarray:
    """Uniform random maps at the heatmap's own resolution: the same blockiness, no information."""
    return rng.random((count, *shape), dtype=np.float32)


def deletion_order(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per image, each pixel's rank by saliency (0 = most salient); ties broken at random.

    Random tie-breaking matters: a flat (all-zero) map then deletes like a random map instead of
    sweeping the image top-left first, which would favour whatever the model ignores there.
    """
    flat = saliency.reshape(len(saliency), -1).astype(np.float64)
    jitter = rng.random(flat.shape) * 1e-6  # far below the 1/255 steps of an upsampled map
    order = np.argsort(-(flat + jitter), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :].repeat(len(flat), axis=0), axis=1)
    return ranks.reshape(saliency.shape)


def baseline_images(images: np.ndarray, kind: str = "blur") -> np.ndarray:
    """What deleted pixels become: a heavily blurred copy (keeps overall brightness) or the image mean."""
    import cv2

    images = np.asarray(images, dtype=np.float32)
    if kind == "mean":
        return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).copy()
    if kind != "blur":
        raise ValueError(f"deletion baseline must be 'blur' or 'mean', got {kind!r}")
    sigma = max(1.0, images.shape[1] / 8.0)  # wide enough to erase a finding, not the body outline
    return np.stack([cv2.GaussianBlur(image, (0, 0), sigma) for image in images])


def deletion_curves(
    score: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    ranks: np.ndarray,
    baseline: np.ndarray,
    steps: int,
    ends: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Score after deleting the top 0, 1/steps, ..., all of each image's pixels; shape (N, steps + 1).

    `ends` are the scores of the intact and of the fully deleted images, which do not depend on the
    map: pass them to skip recomputing them for every map compared on the same images.
    """
    pixels = ranks.shape[1] * ranks.shape[2]
    curves = []
    for k in range(steps + 1):
        if ends is not None and k in (0, steps):
            curves.append(ends[0] if k == 0 else ends[1])
            continue
        deleted = (ranks < round(pixels * k / steps))[..., None]
        curves.append(score(np.where(deleted, baseline, images).astype(np.float32)))
    return np.stack(curves, axis=1)


def curve_area(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area under each curve over the deleted fraction 0..1 (lower = faster fall)."""
    steps = curves.shape[1] - 1
    return (curves[:, 1:] + curves[:, :-1]).sum(axis=1) / (2.0 * steps)


def faithfulness(
    gradcam: GradCam,
    images: np.ndarray,
    heatmaps: np.ndarray,
    *,
    steps: int = 10,
    baseline: str = "blur",
    seed: int | None = 0,
    random_maps_per_image: int = 5,
    alpha: float = 0.05,
    masks: np.ndarray | None = None,
) -> dict[str, Any]:
    """Deletion curves (on the logit) of Grad-CAM against random maps on the same images, and a paired verdict.

    Each image's Grad-CAM area is compared with the mean area of `random_maps_per_image` random
    maps on that image; Grad-CAM is "better than random" when a one-sided Wilcoxon signed-rank
    test over images finds its areas lower at level `alpha`. `masks` (N, H, W), where given, marks
    the image content: padding is deleted last by every map, so no map gains by deleting nothing.
    """
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(seed)
    cam, chance = _cam_and_chance_curves(gradcam, images, heatmaps, baseline, steps, rng, random_maps_per_image, masks)
    cam_area, chance_area = (
        curve_area(cam),
        curve_area(chance.reshape(-1, steps + 1)).reshape(random_maps_per_image, len(images)).mean(axis=0),
    )
    difference = cam_area - chance_area
    if len(images) and np.any(difference != 0):
        p_value = float(wilcoxon(difference, alternative="less", zero_method="zsplit").pvalue)
    else:
        p_value = 1.0
    better = bool(p_value < alpha and difference.mean() < 0)
    return {
        "images": int(len(images)),
        "steps": steps,
        "baseline": baseline,
        "score": "logit",
        "random_maps_per_image": random_maps_per_image,
        "gradcam_deletion_auc": float(cam_area.mean()),
        "random_deletion_auc": float(chance_area.mean()),
        "mean_area_difference": float(difference.mean()) if len(images) else None,
        "images_gradcam_better": int((difference < 0).sum()),
        "test": "one-sided Wilcoxon signed-rank over images, paired (Grad-CAM vs mean of random maps)",
        "p_value": p_value,
        "alpha": alpha,
        "better_than_random": better,
        "flag": None
        if better
        else (
            f"Grad-CAM deletes no better than a random map (p = {p_value:.2g} over "
            f"{len(images)} images): its heatmaps are not evidence"
        ),
        "fraction_deleted": [k / steps for k in range(steps + 1)],
        "gradcam_curve": cam.mean(axis=0).tolist(),
        "random_curve": chance.mean(axis=(0, 1)).tolist(),
    }


def _cam_and_chance_curves(
    gradcam: GradCam,
    images: np.ndarray,
    heatmaps: np.ndarray,
    baseline: str,
    steps: int,
    rng: np.random.Generator,
    random_maps_per_image: int,
    masks: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM's deletion curves (images, steps + 1) and those of random maps (maps, images, steps + 1)."""
    size = images.shape[1:3]
    fill = baseline_images(images, baseline)

    def ranks(saliency: np.ndarray) -> np.ndarray:
        saliency = upsample(saliency, size)
        if masks is not None:
            saliency = np.where(masks, saliency, -1.0)
        return deletion_order(saliency, rng)

    ends = (gradcam.logits(images), gradcam.logits(fill))
    cam = deletion_curves(gradcam.logits, images, ranks(heatmaps), fill, steps, ends)
    chance = np.stack(
        [
            deletion_curves(
                gradcam.logits, images, ranks(random_maps(rng, len(images), heatmaps.shape[1:])), fill, steps, ends
            )
            for _ in range(random_maps_per_image)
        ]
    )  # (maps, images, steps + 1)
    return cam, chance


def pointing_game(heatmaps: np.ndarray, regions: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Per image, whether the heatmap's peak (upsampled as the overlay shows it) falls within `tolerance` pixels
    of `regions` (N, H, W).

    Zhang et al.'s pointing game allows 15 px. A bilinearly upsampled map peaks at the centre of one of
    its cells, so half a cell (image size / map size / 2) is the tolerance its resolution implies.
    """
    regions = np.asarray(regions, dtype=bool)
    maps = upsample(heatmaps, regions.shape[1:3])
    peaks = np.stack(np.unravel_index(maps.reshape(len(maps), -1).argmax(axis=1), regions.shape[1:3]), axis=1)
    hits = []
    for peak, region in zip(peaks, regions):
        inside = np.argwhere(region)
        hits.append(bool(len(inside)) and float(np.sqrt(((inside - peak) ** 2).sum(axis=1)).min()) <= tolerance)
    return np.array(hits, dtype=bool)


def render_deletion_plot(result: dict[str, Any], title: str = "") -> bytes:
    """The mean deletion curves of Grad-CAM and the random baseline as PNG bytes."""
    from matplotlib.figure import Figure

    from medcore.assess.plots import png_bytes

    fig = Figure(figsize=(4.5, 3.6))
    ax = fig.add_subplot()
    x = result["fraction_deleted"]
    ax.plot(x, result["gradcam_curve"], "o-", label=f"Grad-CAM (AUC {result['gradcam_deletion_auc']:.3f})")
    ax.plot(
        x, result["random_curve"], "s--", color="grey", label=f"random map (AUC {result['random_deletion_auc']:.3f})"
    )
    ax.set(
        xlabel="fraction of pixels deleted (most salient first)",
        ylabel=f"mean {result.get('score', 'logit')}",
        title=f"Deletion curve {title}".strip(),
        xlim=(0, 1),
    )
    ax.legend(fontsize=8)
    return png_bytes(fig)
