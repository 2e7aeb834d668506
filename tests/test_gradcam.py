"""Grad-CAM on the real DenseNet121 graph: target layer, normalisation, example picking, overlays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medcore.config import Profile
from medcore.errors import MedcoreError
from medcore.gradcam import gradcam_heatmaps, overlay, pick_examples


@pytest.fixture(scope="module")
def model():
    from medcore.training import build_model

    return build_model(Profile("t", image_size=32, execution="eager"), seed=0)


def test_heatmaps_on_relu_are_normalised(model):
    """One 1x1..7x7 map per image from layer `relu`, in [0, 1], with a peak of 1 unless all zero."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(3, 32, 32, 3)).astype("float32")
    maps = gradcam_heatmaps(model, images, "relu")
    assert maps.shape[0] == 3 and maps.ndim == 3
    assert np.all(maps >= 0) and np.all(maps <= 1.0 + 1e-6)
    peaks = maps.reshape(3, -1).max(axis=1)
    assert np.all((np.isclose(peaks, 1.0, atol=1e-4)) | (peaks == 0))


def test_unknown_layer_is_a_clear_error(model):
    """Asking for a layer the model lacks names the layer."""
    with pytest.raises(MedcoreError, match="conv5_block99"):
        gradcam_heatmaps(model, np.zeros((1, 32, 32, 3), "float32"), "conv5_block99")


def test_overlay_keeps_size_and_colours():
    """An overlay is a BGR image at least as large as the input, not a copy of it."""
    image = np.full((32, 32, 3), 90, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[3, 3] = 1.0
    out = overlay(image, heat, "TP p=0.90")
    assert out.shape[2] == 3 and out.shape[0] >= 32
    assert out.std() > 0


def test_pick_examples_takes_most_confident_of_each_kind():
    """TP/TN/FP/FN are each ranked by confidence in the predicted class."""
    predictions = pd.DataFrame({
        "label":       [1, 1, 0, 0, 0, 1],
        "predicted":   [1, 1, 0, 1, 0, 0],
        "probability": [0.9, 0.6, 0.1, 0.7, 0.4, 0.2],
        "relpath": list("abcdef"), "path": list("abcdef"),
    })
    picked = pick_examples(predictions, per_kind=1)
    assert dict(zip(picked["kind"], picked["relpath"])) == {"tp": "a", "tn": "c", "fp": "d", "fn": "f"}
