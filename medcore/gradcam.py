"""Grad-CAM on DenseNet121's final activation, and overlays a reader can check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medcore.errors import MedcoreError

__all__ = ["gradcam_heatmaps", "overlay", "pick_examples"]

EPSILON = 1e-8


def gradcam_heatmaps(model, images: np.ndarray, layer: str = "relu") -> np.ndarray:
    """Return one heatmap in [0, 1] per image, at the target layer's resolution.

    Gradients are taken of the logit, not the sigmoid, so confident predictions do not saturate
    to zero gradient.
    """
    import keras
    import tensorflow as tf

    try:
        target = model.get_layer(layer)
    except ValueError:
        raise MedcoreError(f"Grad-CAM layer {layer!r} not found in model {model.name!r}") from None
    probe = keras.Model(model.inputs, [target.output, model.output])
    batch = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        activations, logits = probe(batch, training=False)
        score = tf.reduce_sum(logits)
    grads = tape.gradient(score, activations)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1)).numpy()
    peaks = cams.reshape(len(cams), -1).max(axis=1).reshape(-1, 1, 1)
    return cams / (peaks + EPSILON)  # an all-zero map stays zero instead of dividing by zero


def overlay(image: np.ndarray, heatmap: np.ndarray, caption: str, alpha: float = 0.4) -> np.ndarray:
    """Blend a JET-coloured heatmap onto an RGB uint8 image and write `caption` on it; return BGR."""
    import cv2

    height, width = image.shape[:2]
    scale = max(1, 256 // max(height, width))  # tiny images get upscaled so the caption is legible
    base = cv2.resize(image, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)
    heat = cv2.resize(heatmap.astype(np.float32), (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(cv2.cvtColor(base, cv2.COLOR_RGB2BGR), 1 - alpha, colour, alpha, 0)
    cv2.rectangle(blended, (0, 0), (blended.shape[1], 18), (0, 0, 0), thickness=-1)
    cv2.putText(blended, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return blended


def pick_examples(predictions: pd.DataFrame, per_kind: int) -> pd.DataFrame:
    """The most confident true/false positives/negatives, `per_kind` of each where they exist."""
    frame = predictions.copy()
    frame["kind"] = np.select(
        [(frame.label == 1) & (frame.predicted == 1), (frame.label == 0) & (frame.predicted == 0),
         (frame.label == 0) & (frame.predicted == 1), (frame.label == 1) & (frame.predicted == 0)],
        ["tp", "tn", "fp", "fn"], default="?")
    frame["confidence"] = np.where(frame.predicted == 1, frame.probability, 1 - frame.probability)
    picked = (frame.sort_values("confidence", ascending=False).groupby("kind", sort=False).head(per_kind))
    return picked.sort_values(["kind", "confidence"], ascending=[True, False]).reset_index(drop=True)


def load_rgb(path: str | Path, size: int) -> np.ndarray:
    """Decode an image file to RGB uint8 at `size` x `size`, as the model sees it."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise MedcoreError(f"{path}: cannot decode image")
    return cv2.cvtColor(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
