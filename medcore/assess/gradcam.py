"""Grad-CAM on DenseNet121's final activation, overlays a reader can check, and a faithfulness test
(the deletion curves live in medcore.assess.faithfulness; their names are re-exported here).

Contract. Images are float32 arrays (N, H, W, 3) of raw 0-255 pixels, decoded and resized exactly
as in training (`load_images`); the model does its own preprocessing and emits one logit. Heatmaps
are float32 (N, h, w) in [0, 1] at the target layer's resolution (7 x 7 for `relu` at 224 px).

Faithfulness is measured with a deletion curve: the most salient pixels are replaced by a
baseline (the blurred image, or its mean) in equal steps while the model's logit is recorded. A
map that points at what the model uses makes the score fall early (small area under the curve);
the curves of several random maps of the same resolution are the chance level it has to beat,
image by image, with a paired one-sided Wilcoxon test. The logit, not P(positive): a confident
model's probability stays at 0.9999 whatever is deleted, and the verdict would be float noise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcore.assess.faithfulness import (
    baseline_images,
    curve_area,
    deletion_curves,
    deletion_order,
    faithfulness,
    pointing_game,
    random_maps,
    render_deletion_plot,
    upsample,
)
from medcore.data.datasets import load_images
from medcore.errors import MedcoreError
from medcore.jsonio import atomic_write_bytes, read_json, write_json

if TYPE_CHECKING:
    from medcore.config import GradcamSettings
    from medcore.layout import ModelLayout

__all__ = [
    "explain_model",
    "deletion_inputs",
    "GradCam",
    "gradcam_heatmaps",
    "check_layer",
    "overlay",
    "pick_examples",
    "contact_sheet",
    "load_rgb",
    "upsample",
    "random_maps",
    "deletion_order",
    "baseline_images",
    "deletion_curves",
    "curve_area",
    "faithfulness",
    "heatmap_centre",
    "render_deletion_plot",
    "KINDS",
    "pointing_game",
    "mask_padding",
]

log = logging.getLogger(__name__)
EPSILON = 1e-8
KINDS = ("tp", "tn", "fp", "fn")


def explain_model(paths: ModelLayout, settings: GradcamSettings, title: str) -> dict[str, Any]:
    """The Grad-CAM stage: overlays of the most confident TP/TN/FP/FN test images, a contact sheet, and the
    deletion test; writes them and gradcam.json beside the model and returns that record.

    The deletion test runs on the test images the model scores most positive and compares Grad-CAM
    with random maps; the record flags a model whose Grad-CAM does no better than chance.
    """
    from medcore.assess.predict import load_model
    from medcore.model.contract import contract_resize, contract_temperature

    stage_start = time.perf_counter()
    model = load_model(paths.model)
    explainer = GradCam(model, settings.layer, settings.batch_size)  # checks the layer before any work
    size = explainer.image_shape[0]
    # Preprocessed and calibrated exactly as the model was trained and evaluated (its contract).
    resize, temperature = contract_resize(paths.model), contract_temperature(paths.model)
    predictions = pd.read_csv(paths.predictions_csv)
    for stale in paths.gradcam_dir.glob("*.png"):  # a retry may pick fewer examples than the last attempt
        stale.unlink()
    overlays = _write_overlays(explainer, predictions, settings, paths, resize, temperature)
    faithful, images, maps = _deletion_test(explainer, predictions, settings, paths, resize, title)
    probes = _probes(explainer, predictions, settings, paths, resize, temperature, (images, maps), title)
    record = {
        "layer": settings.layer,
        "map_shape": explainer.map_shape,
        "image_size": size,
        "model_path": paths.model,
        "resize": resize,
        "padding_masked": resize == "pad",
        "temperature": temperature,
        **overlays,
        "faithfulness": faithful,
        "probes": probes,
        "not_evidence": _not_evidence(faithful, probes),
        "stage_seconds": time.perf_counter() - stage_start,
    }
    write_json(paths.gradcam_json, record)
    return record


def _deletion_test(
    explainer: GradCam,
    predictions: pd.DataFrame,
    settings: GradcamSettings,
    paths: ModelLayout,
    resize: str,
    title: str,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The deletion test on the most positive test images, its plot written; the record and the images and maps
    it ran on (the probes reuse them)."""
    start = time.perf_counter()
    strongest, images, maps, masks = deletion_inputs(explainer, predictions, settings, resize)
    faithful = faithfulness(
        explainer,
        images,
        maps,
        steps=settings.deletion_steps,
        baseline=settings.deletion_baseline,
        seed=settings.seed,
        random_maps_per_image=settings.deletion_random_maps,
        alpha=settings.deletion_alpha,
        masks=masks,
    )
    faithful.update(
        {
            "seconds": time.perf_counter() - start,
            "plot": paths.gradcam_deletion_png,
            "predicted_positive": int(strongest["predicted"].sum()),
            "labelled_positive": int(strongest["label"].sum()),
        }
    )
    atomic_write_bytes(paths.gradcam_deletion_png, render_deletion_plot(faithful, title))
    if not faithful["better_than_random"]:
        log.warning("%s: %s", title, faithful["flag"])
    return faithful, images, maps


def _probes(
    explainer: GradCam,
    predictions: pd.DataFrame,
    settings: GradcamSettings,
    paths: ModelLayout,
    resize: str,
    temperature: float,
    strongest: tuple[np.ndarray, np.ndarray],
    title: str,
) -> dict[str, Any] | None:
    """The shortcut probes and the sanity check (medcore.assess.probes), their plot written; None when switched off."""
    from medcore.assess.probes import render_probes_plot, run_probes

    if not settings.probes.enabled:
        return None
    images, _ = strongest
    signed, _ = explainer.signed_maps(images[: settings.probes.sanity_images])
    probes = run_probes(
        explainer,
        predictions,
        settings.probes,
        resize=resize,
        temperature=temperature,
        strongest=(images, signed),
        seed=settings.seed or 0,
        model_auc=_test_auc(paths),
    )
    probes["plot"] = atomic_write_bytes(paths.gradcam_probes_png, render_probes_plot(probes, title))
    for finding in probes["findings"]:
        if finding["severity"] == "warning":
            log.warning("%s: %s: %s", title, finding["code"], finding["message"])
    return probes


def _test_auc(paths: ModelLayout) -> dict[str, Any] | None:
    """The evaluation's test ROC AUC and its interval ({value, low, high}), None where it recorded none."""
    if not paths.metrics_json.exists():
        return None
    metrics = read_json(paths.metrics_json)
    value, bounds = metrics.get("roc_auc"), (metrics.get("intervals") or {}).get("roc_auc") or {}
    if not isinstance(value, (int, float)) or bounds.get("low") is None or bounds.get("high") is None:
        return None
    return {"value": float(value), "low": float(bounds["low"]), "high": float(bounds["high"])}


def _not_evidence(faithful: dict[str, Any], probes: dict[str, Any] | None) -> list[str]:
    """Why the overlays must not be read as evidence of what the model looks at (empty: no known reason)."""
    reasons = []
    if not faithful.get("better_than_random"):
        reasons.append("deleting where Grad-CAM points lowers the score no faster than deleting at random")
    if probes and (probes.get("sanity") or {}).get("fires"):
        reasons.append(
            "the maps barely change when the model's weights are randomised (or show nothing, or explain a model "
            "at chance)"
        )
    return reasons


def deletion_inputs(
    explainer: GradCam, predictions: pd.DataFrame, settings: GradcamSettings, resize: str
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray | None]:
    """What the deletion test runs on: the test images the model scores highest (their rows, pixels, Grad-CAM
    maps, and where `resize` is pad the masks of their content)."""
    from medcore.data.datasets import content_masks

    size = explainer.image_shape[0]
    strongest = predictions.sort_values("probability", ascending=False, kind="stable").head(settings.deletion_images)
    images = load_images(strongest["path"].tolist(), size, settings.batch_size, resize)
    maps, _ = explainer.heatmaps(images)
    masks = content_masks(strongest["path"].tolist(), size, resize) if resize == "pad" else None
    return strongest, images, maps, masks


def _write_overlays(
    explainer: GradCam,
    predictions: pd.DataFrame,
    settings: GradcamSettings,
    paths: ModelLayout,
    resize: str = "squash",
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Overlay PNGs of the picked examples and their contact sheet; their entries for gradcam.json."""
    from medcore.data.datasets import content_masks

    start = time.perf_counter()
    picked = pick_examples(predictions, settings.samples)
    size = explainer.image_shape[0]
    images = load_images(picked["path"].tolist(), size, settings.batch_size, resize)
    heatmaps, logits = explainer.heatmaps(images)
    if resize == "pad":  # the padding holds no anatomy: no heat may be shown there
        heatmaps = mask_padding(heatmaps, content_masks(picked["path"].tolist(), size, resize))
    seconds = time.perf_counter() - start
    # The same pipeline decoded these images for predictions.csv: a drift here means the overlays lie.
    calibrated = 1 / (1 + np.exp(-logits / temperature))
    drift = float(np.abs(calibrated - picked["probability"].to_numpy()).max()) if len(picked) else 0.0
    entries: list[dict[str, Any]] = []
    tiles: dict[str, list[np.ndarray]] = {kind: [] for kind in KINDS}
    for i, row in picked.iterrows():
        rank = len(tiles[row.kind]) + 1
        target = paths.gradcam_overlay(row.kind, rank)
        caption = f"{row.kind.upper()} p={row.probability:.2f} true={'pos' if row.label else 'neg'}"
        tiles[row.kind].append(overlay(images[i], heatmaps[i], caption))
        _write_png(tiles[row.kind][-1], target)
        entries.append(
            {
                "file": target,
                "image": row.relpath,
                "kind": row.kind,
                "probability": row.probability,
                "label": int(row.label),
                "heat_centre": heatmap_centre(heatmaps[i]),
            }
        )
    rows = [tiles[kind] for kind in KINDS if tiles[kind]]
    sheet = _write_png(contact_sheet(rows), paths.gradcam_contact_sheet) if rows else None
    return {"overlays": entries, "contact_sheet": sheet, "heatmap_seconds": seconds, "max_probability_drift": drift}


def _write_png(image: np.ndarray, target: Path) -> Path:
    import cv2

    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise MedcoreError(f"{target}: cannot encode image")
    return atomic_write_bytes(target, png.tobytes())


def check_layer(model, layer: str):
    """Return `model`'s layer `layer` if it yields a spatial (batch, h, w, channels) map; else MedcoreError."""
    try:
        target = model.get_layer(layer)
    except ValueError:
        raise MedcoreError(
            f"Grad-CAM layer {layer!r} not found in model {model.name!r}; set gradcam.layer "
            f"to a convolutional block's output (DenseNet121: 'relu')"
        ) from None
    shape = tuple(target.output.shape)
    if len(shape) != 4:
        raise MedcoreError(
            f"Grad-CAM layer {layer!r} of model {model.name!r} has output shape {shape}; "
            f"it needs a spatial (batch, height, width, channels) map"
        )
    return target


def _check_logit_output(model) -> None:
    # Grad-CAM of the sigmoid vanishes for confident predictions; insist on the raw logit.
    shape = tuple(model.outputs[0].shape)
    activation = getattr(model.layers[-1], "activation", None)
    name = getattr(activation, "__name__", "linear")
    if shape[-1] != 1 or name not in ("linear", None):
        raise MedcoreError(
            f"model {model.name!r} must emit one logit (output {shape}, activation {name!r}); "
            f"Grad-CAM takes gradients of the logit, not of a probability"
        )


class GradCam:
    """Batched Grad-CAM and forward scores for one model, compiled once and reused.

    Both computations run inside `tf.function` with a fixed input signature, so every batch size
    reuses one graph: on two cores this is ~5x faster than eager execution.
    """

    def __init__(self, model, layer: str = "relu", batch_size: int = 32):
        import keras
        import tensorflow as tf

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        target = check_layer(model, layer)
        _check_logit_output(model)
        self.model, self.layer, self.batch_size = model, layer, batch_size
        if any(d is None for d in model.inputs[0].shape[1:]):
            raise MedcoreError(
                f"model {model.name!r} has input shape {tuple(model.inputs[0].shape)}; "
                f"Grad-CAM needs a fixed image size"
            )
        self.image_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        self.map_shape = tuple(int(d) for d in target.output.shape[1:3])
        probe = keras.Model(model.inputs, [target.output, model.outputs[0]])
        spec = [tf.TensorSpec((None, *self.image_shape), tf.float32)]

        @tf.function(input_signature=spec)
        def cams(images):
            with tf.GradientTape() as tape:
                # Watching the input records every op, so frozen (non-trainable) layers still get gradients.
                tape.watch(images)
                activations, logits = probe(images, training=False)
                score = tf.reduce_sum(tf.cast(logits, tf.float32))  # each logit depends on its own image only
            grads = tf.cast(tape.gradient(score, activations), tf.float32)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            # Signed: the ReLU is applied outside, so the sanity check (medcore.assess.probes) can read the same trace.
            maps = tf.reduce_sum(weights * tf.cast(activations, tf.float32), axis=-1)
            return maps, tf.cast(logits[:, 0], tf.float32)

        @tf.function(input_signature=spec)
        def logits(images):
            return tf.cast(model(images, training=False)[:, 0], tf.float32)

        self._cams, self._logits = cams, logits

    def _batched(self, fn: Callable, images: np.ndarray) -> list:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, self.image_shape))}), got {images.shape}")
        return [fn(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]

    def heatmaps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (heatmaps in [0, 1] at the layer's resolution, logits) for a stack of images."""
        if len(images) == 0:
            return np.zeros((0, *self.map_shape), np.float32), np.zeros(0, np.float32)
        maps, logits = self.signed_maps(images)
        maps = np.maximum(maps, 0.0)
        peaks = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
        return maps / (peaks + EPSILON), logits  # an all-zero map stays zero instead of dividing by zero

    def signed_maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Grad-CAM before its ReLU and unnormalised, logits): the sign and scale the sanity check compares."""
        if len(images) == 0:
            return np.zeros((0, *self.map_shape), np.float32), np.zeros(0, np.float32)
        parts = self._batched(self._cams, images)
        return np.concatenate([m.numpy() for m, _ in parts]), np.concatenate([z.numpy() for _, z in parts])

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The model's logit for a stack of images, in batches (float64)."""
        if len(images) == 0:
            return np.zeros(0, np.float64)
        return np.concatenate([z.numpy() for z in self._batched(self._logits, images)]).astype(np.float64)

    def probabilities(self, images: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """P(positive) = sigmoid(logit / temperature) for a stack of images, in batches."""
        return 1.0 / (1.0 + np.exp(-self.logits(images) / temperature))


def gradcam_heatmaps(model, images: np.ndarray, layer: str = "relu", batch_size: int = 32) -> np.ndarray:
    """Return one heatmap in [0, 1] per image, at the target layer's resolution.

    Gradients are taken of the logit, not the sigmoid, so confident predictions do not saturate
    to zero gradient. For repeated calls on one model build a `GradCam` once instead.
    """
    return GradCam(model, layer, batch_size).heatmaps(images)[0]


# --------------------------------------------------------------------------- images and overlays


def load_rgb(path: str | Path, size: int) -> np.ndarray:
    """Decode an image file to RGB uint8 at `size` x `size` with OpenCV (for display only)."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise MedcoreError(f"{path}: cannot decode image")
    return cv2.cvtColor(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heatmap: np.ndarray, caption: str, alpha: float = 0.4) -> np.ndarray:
    """Blend a JET-coloured heatmap onto an RGB uint8 image and write `caption` on it; return BGR."""
    import cv2

    image = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
    height, width = image.shape[:2]
    scale = max(1, 256 // max(height, width))  # tiny images get upscaled so the caption is legible
    base = cv2.resize(image, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)
    heat = cv2.resize(heatmap.astype(np.float32), (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((255 * np.clip(heat, 0, 1)).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(cv2.cvtColor(base, cv2.COLOR_RGB2BGR), 1 - alpha, colour, alpha, 0)
    cv2.rectangle(blended, (0, 0), (blended.shape[1], 18), (0, 0, 0), thickness=-1)
    cv2.putText(blended, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return blended


def contact_sheet(rows: Sequence[Sequence[np.ndarray | None]], pad: int = 4) -> np.ndarray:
    """Tile equally sized BGR images into one grid (one row per list); None leaves a blank cell."""
    tiles = [t for row in rows for t in row if t is not None]
    if not tiles:
        raise ValueError("a contact sheet needs at least one image")
    height, width = tiles[0].shape[:2]
    columns = max(len(row) for row in rows)
    sheet = np.zeros((len(rows) * (height + pad) + pad, columns * (width + pad) + pad, 3), np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            if tile is not None:
                top, left = pad + r * (height + pad), pad + c * (width + pad)
                sheet[top : top + height, left : left + width] = tile
    return sheet


def pick_examples(predictions: pd.DataFrame, per_kind: int) -> pd.DataFrame:
    """The most confident true/false positives/negatives, `per_kind` of each where they exist."""
    frame = predictions.copy()
    frame["kind"] = np.select(
        [
            (frame.label == 1) & (frame.predicted == 1),
            (frame.label == 0) & (frame.predicted == 0),
            (frame.label == 0) & (frame.predicted == 1),
            (frame.label == 1) & (frame.predicted == 0),
        ],
        ["tp", "tn", "fp", "fn"],
        default="?",
    )
    frame["confidence"] = np.where(frame.predicted == 1, frame.probability, 1 - frame.probability)
    picked = frame.sort_values("confidence", ascending=False).groupby("kind", sort=False).head(per_kind)
    return picked.sort_values(["kind", "confidence"], ascending=[True, False]).reset_index(drop=True)


def heatmap_centre(heatmap: np.ndarray) -> tuple[float, float] | None:
    """The heatmap's centre of mass as (x, y) fractions of its width and height; None if it is all zero."""
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0, None)
    total = heat.sum()
    if total <= 0:
        return None
    height, width = heat.shape
    ys, xs = np.mgrid[0:height, 0:width]
    return float(((xs + 0.5) * heat).sum() / total / width), float(((ys + 0.5) * heat).sum() / total / height)


def mask_padding(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Heatmaps upsampled to the masks' (image) size, zero on padding, rescaled to peak at 1 within the image."""
    maps = upsample(heatmaps, masks.shape[1:3]) * masks
    peaks = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1) if len(maps) else 1.0
    return (maps / (peaks + EPSILON)).astype(np.float32)
