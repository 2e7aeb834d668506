"""Shrink and perturb moves the weights as specified, re-estimates batch norm as documented, stays loadable."""

from __future__ import annotations

import numpy as np
import pytest

from medcore.model.warmstart import WarmStartPlan, reestimate_batch_norm, rewarm_rate, shrink_and_perturb


def _net(seed: int):
    """A small conv net with batch norm: the layer kinds DenseNet121 is made of."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.BatchNormalization(name="bn_in")(inputs)
    x = keras.layers.Conv2D(64, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="logit")(x))


def _weights(model) -> dict[str, np.ndarray]:
    return {w.path: w.numpy().copy() for w in model.weights}


def test_shrink_and_perturb_scales_every_trainable_weight_and_adds_initialiser_scale_noise():
    model, fresh = _net(1), _net(2)
    rng = np.random.default_rng(0)
    for w in model.trainable_weights:  # a "trained" champion: weights far from their initialisation
        w.assign(rng.normal(0.5, 1.0, w.shape).astype("float32"))
    before, noise = _weights(model), _weights(fresh)  # layers named alike: same paths

    changed = shrink_and_perturb(model, fresh, shrink=0.4, perturb=0.01)

    assert changed == len(model.trainable_weights)
    for w in model.trainable_weights:
        expected = 0.4 * before[w.path] + 0.01 * noise[w.path]
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6, atol=1e-7)
    kernel = model.get_layer("conv").kernel
    residual = kernel.numpy() - 0.4 * before[kernel.path]
    fresh_std = fresh.get_layer("conv").kernel.numpy().std()
    assert residual.std() == pytest.approx(0.01 * fresh_std, rel=0.05), "noise of the initialiser's scale"
    assert abs(residual.mean()) < 0.01 * fresh_std * 0.1, "the perturbation has no bias"
    for w in model.non_trainable_weights:  # batch norm statistics are reestimate_batch_norm's business
        np.testing.assert_array_equal(w.numpy(), before[w.path])


def test_batch_norm_is_reestimated_as_the_average_over_the_train_batches():
    """The moving mean becomes the exact mean of the batches' means; no trainable weight moves; momentum back."""
    model = _net(3)
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0 + i, 2.0, (8, 16, 16, 3)).astype("float32") for i in range(4)]
    trainable = {w.path: w.numpy().copy() for w in model.trainable_weights}
    momentum = model.get_layer("bn_in").momentum

    used = reestimate_batch_norm(model, iter([(b, None) for b in batches]), max_batches=3)

    assert used == 3
    layer = model.get_layer("bn_in")
    batch_means = np.stack([b.mean(axis=(0, 1, 2)) for b in batches[:3]])
    np.testing.assert_allclose(layer.moving_mean.numpy(), batch_means.mean(axis=0), rtol=1e-4)
    batch_vars = np.stack([b.var(axis=(0, 1, 2)) for b in batches[:3]])
    np.testing.assert_allclose(layer.moving_variance.numpy(), batch_vars.mean(axis=0), rtol=2e-2)
    assert layer.momentum == momentum
    for w in model.trainable_weights:
        np.testing.assert_array_equal(w.numpy(), trainable[w.path])


def test_a_shrunk_densenet_saves_and_loads(tmp_path):
    """The real architecture: every tensor matches its fresh twin, and the result is a loadable `.keras` file."""
    import keras

    from medcore.config import Profile
    from medcore.model.training import build_network

    profile = Profile(name="standard", image_size=32, weights="none")
    model, fresh = build_network(profile, 0), build_network(profile, 0)
    assert shrink_and_perturb(model, fresh, 0.5, 0.01) == len(model.trainable_weights)
    images = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    assert reestimate_batch_norm(model, [images]) == 1
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5)


def test_rewarm_climbs_back_to_the_profile_rate_then_follows_its_cosine():
    rates = [rewarm_rate(step, 1e-4, 1e-3, warmup=10, total=100) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[10] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:10], rates[1:11], strict=True))
    assert rates[-1] == pytest.approx(0.05 * 1e-3) and max(rates) == pytest.approx(1e-3)


def test_a_plain_continue_keeps_the_champion_weights_and_records_so():
    class Nightly:
        warm_start, shrink, perturb, batch_norm, rewarm = "continue", 0.4, 0.01, "reestimate", 0.0

    plan = WarmStartPlan.from_settings(Nightly, 1e-3, 0.2)
    assert (plan.shrink, plan.perturb, plan.batch_norm) == (1.0, 0.0, "keep")
    assert plan.record(0) | {"growth": None} == {
        "method": "continue",
        "shrink": 1.0,
        "perturb": 0.0,
        "batch_norm": "keep",
        "rewarm": 0.0,
        "peak_learning_rate": 1e-3,
        "growth": None,
        "batch_norm_batches": 0,
    }
