"""Grad-CAM: target layer checks, batching, overlays, the deletion test, and localisation on phantoms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medcore.assess.gradcam import (
    GradCam,
    contact_sheet,
    curve_area,
    deletion_curves,
    deletion_order,
    gradcam_heatmaps,
    heatmap_centre,
    overlay,
    pick_examples,
    upsample,
)
from medcore.config import GradcamSettings, Profile, load_config
from medcore.errors import ConfigError, MedcoreError
from tests.conftest import ROOT, write_yaml


@pytest.fixture(scope="module")
def model():
    from medcore.model.training import build_model

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


def test_non_spatial_layer_is_refused(model):
    """A dense layer has no map to show; the error says what shape is needed."""
    with pytest.raises(MedcoreError, match=r"'logit'.*spatial"):
        GradCam(model, "logit")


def test_probability_output_is_refused():
    """A model ending in a sigmoid is refused: Grad-CAM must differentiate the logit."""
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Activation("relu", name="relu")(keras.layers.Conv2D(2, 3)(inputs))
    sigmoid = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(MedcoreError, match="logit"):
        GradCam(sigmoid, "relu")


def test_batching_does_not_change_heatmaps():
    """Heatmaps and logits are the same whether images go one at a time or all together."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Activation("relu", name="relu")(keras.layers.Conv2D(8, 3, padding="same")(inputs))
    small = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x)))
    images = np.random.default_rng(2).uniform(0, 255, (5, 24, 24, 3)).astype("float32")
    one_by_one, logits1 = GradCam(small, "relu", batch_size=1).heatmaps(images)
    together, logits5 = GradCam(small, "relu", batch_size=5).heatmaps(images)
    np.testing.assert_allclose(one_by_one, together, atol=1e-5)
    np.testing.assert_allclose(logits1, logits5, atol=1e-4)
    assert one_by_one.shape == (5, 24, 24)


def test_overlay_keeps_size_and_colours():
    """An overlay is a BGR image at least as large as the input, not a copy of it."""
    image = np.full((32, 32, 3), 90, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[3, 3] = 1.0
    out = overlay(image, heat, "TP p=0.90")
    assert out.shape[2] == 3 and out.shape[0] >= 32
    assert out.std() > 0


def test_overlay_accepts_float_pixels():
    """Model-space float images (0-255) overlay the same as their uint8 copy."""
    image = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    heat = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(overlay(image, heat, "x"), overlay(image.astype(np.uint8), heat, "x"))


def test_contact_sheet_grid_and_blanks():
    """Rows of tiles become one padded grid; shorter rows leave black cells."""
    tile = np.full((10, 12, 3), 200, np.uint8)
    sheet = contact_sheet([[tile, tile], [tile]], pad=2)
    assert sheet.shape == (2 * 12 + 2, 2 * 14 + 2, 3)
    assert sheet[14:24, 16:28].max() == 0 and sheet[2:12, 2:14].min() == 200
    with pytest.raises(ValueError):
        contact_sheet([[]])


def test_pick_examples_takes_most_confident_of_each_kind():
    """TP/TN/FP/FN are each ranked by confidence in the predicted class."""
    predictions = pd.DataFrame(
        {
            "label": [1, 1, 0, 0, 0, 1],
            "predicted": [1, 1, 0, 1, 0, 0],
            "probability": [0.9, 0.6, 0.1, 0.7, 0.4, 0.2],
            "relpath": list("abcdef"),
            "path": list("abcdef"),
        }
    )
    picked = pick_examples(predictions, per_kind=1)
    assert dict(zip(picked["kind"], picked["relpath"])) == {"tp": "a", "tn": "c", "fp": "d", "fn": "f"}


@pytest.mark.parametrize("cell, centre", [((0, 0), (0.25, 0.25)), ((1, 0), (0.25, 0.75)), ((1, 1), (0.75, 0.75))])
def test_heatmap_centre_of_mass(cell, centre):
    """A single hot cell of a 2x2 map puts the centre of mass in that quadrant's middle, as (x, y)."""
    heat = np.zeros((2, 2))
    heat[cell] = 1.0
    assert heatmap_centre(heat) == pytest.approx(centre)
    assert heatmap_centre(np.zeros((2, 2))) is None


# --------------------------------------------------------------------------- deletion test, pure parts


def test_deletion_order_ranks_most_salient_first_and_breaks_ties_randomly():
    """Ranks are a permutation with the hottest pixel first; a flat map gets a seeded random order."""
    rng = np.random.default_rng(0)
    saliency = np.zeros((2, 4, 4))
    saliency[0, 2, 3] = 1.0
    ranks = deletion_order(saliency, rng)
    assert sorted(ranks[0].ravel()) == list(range(16)) and ranks[0, 2, 3] == 0
    assert not np.array_equal(ranks[1].ravel(), np.arange(16)), "a flat map must not sweep in reading order"


def test_curve_area_by_hand():
    """Trapezoids over equal steps: [1, 1, 0] has area 0.75, a constant curve its value."""
    assert curve_area(np.array([[1.0, 1.0, 0.0], [0.4, 0.4, 0.4]])) == pytest.approx([0.75, 0.4])


def test_deletion_rewards_the_map_that_points_at_the_evidence():
    """With a score that reads one corner, a map on that corner deletes faster than one elsewhere."""
    images = np.zeros((3, 8, 8, 3), np.float32)
    images[:, 6:, 6:] = 255.0
    score = lambda batch: batch[:, 6:, 6:].mean(axis=(1, 2, 3)) / 255.0  # noqa: E731
    right, wrong = np.zeros((3, 8, 8)), np.zeros((3, 8, 8))
    right[:, 6:, 6:], wrong[:, :2, :2] = 1.0, 1.0
    baseline = np.zeros_like(images)
    rng = np.random.default_rng(0)
    good = deletion_curves(score, images, deletion_order(right, rng), baseline, steps=8)
    bad = deletion_curves(score, images, deletion_order(wrong, rng), baseline, steps=8)
    assert good.shape == (3, 9) and np.all(good[:, 0] == 1.0) and np.all(good[:, -1] == 0.0)
    assert np.all(good[:, 1] == 0.0)  # the first eighth of the pixels is the 2x2 corner itself
    assert curve_area(good).mean() < curve_area(bad).mean()


def test_pointing_game_hits_where_the_peak_is():
    """The upsampled map's peak is looked up in each image's region mask."""
    from medcore.assess.gradcam import pointing_game

    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, 3, 3] = maps[1, 0, 0] = 1.0
    regions = np.zeros((2, 32, 32), bool)
    regions[:, 20:, 20:] = True
    assert pointing_game(maps, regions).tolist() == [True, False]
    # The first map's peak is at pixel (28, 28); a region ending at (24, 24), 5.7 px away, is missed outright
    # and hit with a tolerance of 6 px.
    near = np.zeros((1, 32, 32), bool)
    near[0, 20:25, 20:25] = True
    assert pointing_game(maps[:1], near).tolist() == [False]
    assert pointing_game(maps[:1], near, tolerance=5.0).tolist() == [False]
    assert pointing_game(maps[:1], near, tolerance=6.0).tolist() == [True]


def test_deletion_on_a_saturated_score_still_decides():
    """A model at P = 0.99999 whatever is deleted: its logit still tells a map on the evidence from a random one."""
    from medcore.assess.gradcam import faithfulness

    class Saturated:
        """A score reading one corner, scaled so the probability saturates while the logit does not."""

        def logits(self, batch):
            return 12.0 + batch[:, 12:, 12:].mean(axis=(1, 2, 3)) / 25.5

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 100, (12, 16, 16, 3)).astype(np.float32)
    images[:, 12:, 12:] += rng.uniform(100, 155, (12, 1, 1, 1)).astype(np.float32)  # the evidence: a bright corner
    on_corner = np.zeros((12, 4, 4), np.float32)
    on_corner[:, 3, 3] = 1.0
    good = faithfulness(Saturated(), images, on_corner, steps=8, baseline="mean", seed=1)
    assert good["better_than_random"] and good["p_value"] < 0.01
    probability = 1 / (1 + np.exp(-np.array(good["gradcam_curve"])))
    assert probability.min() > 0.9999  # P(positive) would have called this a tie
    away = faithfulness(Saturated(), images, 1.0 - on_corner, steps=8, baseline="mean", seed=1)
    assert not away["better_than_random"] and away["p_value"] > 0.5


def test_upsample_keeps_a_peak_in_place():
    """Bilinear upsampling keeps a 2x2 map's hot quadrant hot."""
    heat = np.zeros((1, 2, 2), np.float32)
    heat[0, 1, 1] = 1.0
    big = upsample(heat, (32, 32))[0]
    assert big.shape == (32, 32) and big[24:, 24:].mean() > 5 * big[:8, :8].mean()


# --------------------------------------------------------------------------- config


def test_gradcam_section_defaults_and_errors(tmp_path):
    """`gradcam:` keeps layer and samples and adds the deletion settings; bad values name the key."""
    base = f"extends: {ROOT / 'conditions.yaml'}\n"
    path = write_yaml(tmp_path / "a.yaml", base + "gradcam: {deletion_steps: 5, deletion_baseline: mean}\n")
    config = load_config(path)
    assert config.gradcam.layer == "relu" and config.gradcam.samples == 4
    assert (config.gradcam.deletion_steps, config.gradcam.deletion_baseline) == (5, "mean")
    assert config.gradcam.seed == config.seed
    assert GradcamSettings().deletion_images == 32
    for section, key in (
        ("{deletion_baseline: zeros}", "gradcam.deletion_baseline"),
        ("{deletion_steps: 1}", "gradcam.deletion_steps"),
        ("{colormap: jet}", "gradcam.colormap"),
    ):
        with pytest.raises(ConfigError, match=rf"b\.yaml: {key}"):
            load_config(write_yaml(tmp_path / "b.yaml", base + f"gradcam: {section}\n"))


# --------------------------------------------------------------------------- localisation on phantoms


def _phantoms(seed: int, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    from medcore.data.synthetic import phantom

    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    images = np.stack([np.repeat(phantom(rng, size, bool(y))[..., None], 3, axis=-1) for y in labels])
    return images.astype(np.float32), labels


def _phantom_cnn(size: int, seed: int):
    """A small CNN shaped like the production head: last activation `relu`, global average pool, one logit.

    Not DenseNet121: at 64 px DenseNet's `relu` map is 2x2, and after the ~50 s that two eager
    epochs take here its map still peaked in the top-left corner, so it cannot show localisation
    within a test's budget. This net keeps a 16x16 map and learns the phantom in seconds. The
    Grad-CAM code under test is the same: it only needs a spatial layer named `relu` and a logit.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 64.0, offset=-1.5)(inputs)  # phantoms sit around 90/255
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.8)(x)  # settles within the few steps we train
        x = keras.layers.MaxPooling2D()(keras.layers.ReLU()(x))
    x = keras.layers.BatchNormalization(momentum=0.8)(keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(x))
    x = keras.layers.Activation("relu", name="relu")(x)
    logit = keras.layers.Dense(1, name="logit")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, logit)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def phantom_model():
    images, labels = _phantoms(0, 160, 64)
    model = _phantom_cnn(64, seed=0)
    model.fit(images, labels.astype(np.float32), batch_size=16, epochs=6, verbose=0)
    return model


@pytest.mark.slow
def test_heatmap_mass_sits_on_the_phantom_finding(phantom_model):
    """On unseen positive phantoms the heatmap's mass gathers around the finding's known centre."""
    from medcore.data.synthetic import FINDING_CENTRE

    images, labels = _phantoms(1, 32, 64)
    maps, logits = GradCam(phantom_model, "relu").heatmaps(images)
    assert logits[labels == 1].min() > logits[labels == 0].max(), "the model must have learnt the finding"
    positives = upsample(maps[labels == 1], (64, 64))
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    near = (xx - FINDING_CENTRE[0]) ** 2 + (yy - FINDING_CENTRE[1]) ** 2 < 0.2**2  # 13 % of the image
    share = (positives * near).sum(axis=(1, 2)) / positives.sum(axis=(1, 2))
    assert np.median(share) > 4 * near.mean()
    centres = np.array([heatmap_centre(m) for m in maps[labels == 1]])
    assert np.all(np.abs(centres - FINDING_CENTRE) < 0.15)


@pytest.mark.slow
def test_gradcam_beats_random_maps_on_deletion(phantom_model):
    """Deleting where Grad-CAM points lowers P(positive) faster than deleting where a random map points."""
    from medcore.assess.gradcam import faithfulness

    images, labels = _phantoms(2, 32, 64)
    explainer = GradCam(phantom_model, "relu", batch_size=16)
    positives = images[labels == 1]
    maps, _ = explainer.heatmaps(positives)
    result = faithfulness(explainer, positives, maps, steps=10, baseline="blur", seed=0)
    assert result["better_than_random"] and result["flag"] is None
    assert result["score"] == "logit" and result["p_value"] < 0.05 and result["mean_area_difference"] < 0
    assert result["images_gradcam_better"] >= 0.8 * len(positives)
    assert len(result["gradcam_curve"]) == 11 and result["gradcam_curve"][0] == result["random_curve"][0]


@pytest.mark.slow
def test_misleading_heatmaps_are_flagged(phantom_model):
    """Maps that point away from the finding are flagged as no better than random."""
    from medcore.assess.gradcam import faithfulness

    images, labels = _phantoms(3, 16, 64)
    explainer = GradCam(phantom_model, "relu")
    positives = images[labels == 1]
    inverted = 1.0 - explainer.heatmaps(positives)[0]  # points away from the finding: worse than chance
    result = faithfulness(explainer, positives, inverted, steps=5, seed=0)
    assert not result["better_than_random"] and "no better than a random map" in result["flag"]


@pytest.mark.slow
def test_densenet_on_demo_phantoms_points_at_the_finding_beats_random_deletion_and_passes_randomisation():
    """The production DenseNet121 at 128 px (a 4x4 `relu` map), trained on the demo's phantoms, points at the finding.

    Pointing game: the peak of the overlay's heatmap falls inside the finding for >= 80 % of the true
    positives of unseen phantoms; deleting where it points lowers the logit faster than random maps
    do, by a paired test over those images; and the randomisation check with the shipped settings does
    not fire on this model. (In `make demo` it still fires on most models: with 3 draws on 16 images of 4x4
    maps its medians move by up to 0.8 between seeds on one model; issue 34's note.)
    """
    from medcore.assess.gradcam import faithfulness, pointing_game
    from medcore.assess.randomisation import sanity_check
    from medcore.config import ProbeSettings, Profile
    from medcore.data.synthetic import drawn_phantom, finding_region
    from medcore.model.training import build_model

    size = 128

    def phantoms(seed: int, count: int):
        rng = np.random.default_rng(seed)
        labels = np.arange(count) % 2
        drawn = [drawn_phantom(rng, size, bool(y)) for y in labels]
        images = np.stack([np.repeat(image[..., None], 3, axis=-1) for image, _ in drawn]).astype(np.float32)
        return images, labels, [where for _, where in drawn]

    images, labels, _ = phantoms(0, 64)
    # Batches of 8 give 16 steps: enough for batch norm's moving statistics at the demo's momentum (0.7).
    model = build_model(Profile("p", image_size=size, batch_size=8, batch_norm_momentum=0.7), seed=0)
    model.fit(images, labels.astype(np.float32), batch_size=8, epochs=2, verbose=0)

    test_images, test_labels, where = phantoms(1, 40)
    explainer = GradCam(model, "relu", batch_size=20)
    assert explainer.map_shape == (4, 4)
    maps, logits = explainer.heatmaps(test_images)
    true_positive = (test_labels == 1) & (logits > 0)
    assert true_positive.sum() >= 10, "the model must have learnt the finding"
    regions = np.stack([finding_region(size, w) for w, hit in zip(where, true_positive) if hit])
    # Half a map cell (16 px at 128 px): the resolution a 4x4 map's peak has (Zhang et al. allow 15 px).
    assert pointing_game(maps[true_positive], regions, tolerance=size / 4 / 2).mean() >= 0.8
    result = faithfulness(
        explainer, test_images[true_positive], maps[true_positive], steps=8, seed=0, random_maps_per_image=3
    )
    assert result["better_than_random"] and result["p_value"] < 0.05
    probes = ProbeSettings()
    strongest = test_images[np.argsort(-logits)[: probes.sanity_images]]
    sanity = sanity_check(
        explainer,
        strongest,
        list(probes.sanity_stages.items()),
        max_similarity=probes.sanity_max_similarity,
        draws=probes.sanity_draws,
        model_auc={"low": 0.9},  # the premise (AUC above chance) holds: true positives were asserted above
    )
    assert not sanity["fires"], [(s["stage"], s["spearman_median"]) for s in sanity["stages"]]
