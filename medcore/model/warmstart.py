"""How a warm start prepares the champion's weights before tonight's training (issue 36).

A warm-started network can generalise worse than one trained from scratch even at equal training loss
(Ash & Adams, "On Warm-Starting Neural Network Training", NeurIPS 2020). Their remedy, shrink and perturb,
moves every weight towards zero and adds a little of a fresh initialisation:

    w <- shrink * w + perturb * w_fresh

with w_fresh drawn by the model's own initialisers, so the noise has each layer's initial scale.

Batch norm's moving mean and variance are statistics, not trainable weights, and no longer describe the
shrunk network's activations. `batch_norm: reestimate` recomputes them on tonight's train split (an exact
average over a few batches, with weights frozen); `keep` leaves the champion's, which the first epoch's
momentum updates then drag towards the new network's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "WarmStartPlan",
    "shrink_and_perturb",
    "reestimate_batch_norm",
    "rewarm_rate",
    "rewarm_callback",
]


@dataclass(frozen=True)
class WarmStartPlan:
    """How tonight's warm start treats the champion's weights and learning rate (from `nightly` in the config)."""

    method: str = "continue"  # continue | shrink_perturb
    shrink: float = 1.0
    perturb: float = 0.0
    batch_norm: str = "keep"  # reestimate | keep (shrink_perturb only)
    rewarm: float = 0.0  # share of the warm start's steps spent raising the rate back to `peak_learning_rate`
    peak_learning_rate: float | None = None  # the profile's own rate, before the warm start's share of it
    growth: float | None = None  # share of tonight's train images the champion never saw (None: unknown)

    @classmethod
    def from_settings(cls, nightly: Any, peak_learning_rate: float, growth: float | None) -> WarmStartPlan:
        shrinking = nightly.warm_start == "shrink_perturb"
        return cls(
            method=nightly.warm_start,
            shrink=nightly.shrink if shrinking else 1.0,
            perturb=nightly.perturb if shrinking else 0.0,
            batch_norm=nightly.batch_norm if shrinking else "keep",
            rewarm=nightly.rewarm,
            peak_learning_rate=peak_learning_rate,
            growth=growth,
        )

    def record(self, batch_norm_batches: int = 0) -> dict[str, Any]:
        """What training.json and the model card say about this warm start."""
        return {**asdict(self), "batch_norm_batches": batch_norm_batches}


def _is_batch_norm(layer: Any) -> bool:
    return hasattr(layer, "moving_mean") and hasattr(layer, "moving_variance")


def shrink_and_perturb(model: Any, fresh: Any, shrink: float, perturb: float) -> int:
    """Set every trainable weight of `model` to shrink * w + perturb * (the same weight in `fresh`).

    `fresh` is the same architecture freshly initialised (another seed), so the noise of each tensor has its
    initialiser's scale. Non-trainable weights (batch norm's moving statistics) are left alone: see
    `reestimate_batch_norm`. Returns the number of tensors changed.
    """
    theirs = {layer.name: layer for layer in fresh.layers}
    changed = 0
    for layer in model.layers:
        other = theirs.get(layer.name)
        if other is None or not layer.trainable_weights:
            continue
        fresh_by_path = {w.path.split("/", 1)[-1]: w for w in other.trainable_weights}
        for weight in layer.trainable_weights:
            noise = fresh_by_path.get(weight.path.split("/", 1)[-1])
            if noise is None or tuple(noise.shape) != tuple(weight.shape):
                raise ValueError(f"{layer.name}: the fresh model has no weight {weight.path} of shape {weight.shape}")
            weight.assign(shrink * weight.numpy() + perturb * noise.numpy())
            changed += 1
    return changed


def reestimate_batch_norm(model: Any, batches: Iterable[Any], max_batches: int = 20) -> int:
    """Replace every batch norm layer's moving mean and variance by their average over `batches` of images.

    Runs the model in training mode (batch statistics) with each layer's momentum set so the moving value is
    the running mean of the batches seen (momentum k/(k+1) at the k-th batch), then restores the momentum.
    Trainable weights do not change: no gradient is taken. Returns the batches used.
    """
    layers = [layer for layer in model.layers if _is_batch_norm(layer)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    used = 0
    try:
        for batch in batches:
            if used >= max_batches:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = used / (used + 1)
            model(images, training=True)
            used += 1
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return used


def rewarm_rate(step: int, start: float, peak: float, warmup: int, total: int, floor: float = 0.05) -> float:
    """The rate at `step` of a re-warmed start: linear from `start` to `peak` over `warmup` steps, then cosine
    from `peak` to floor * peak by step `total`."""
    if step < warmup:
        return start + (peak - start) * step / max(warmup, 1)
    progress = min((step - warmup) / max(total - warmup - 1, 1), 1.0)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def rewarm_callback(plan: WarmStartPlan, start: float, steps_per_epoch: int, first_epoch: int, last_epoch: int):
    """A Keras callback setting the optimiser's rate before every batch by `rewarm_rate` (absolute step, so a
    resumed attempt continues the same curve)."""
    import keras

    total = max(steps_per_epoch * last_epoch, 1)
    warmup = max(1, round(plan.rewarm * total))
    peak = plan.peak_learning_rate or start

    class Rewarm(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = first_epoch

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            step = self.epoch * steps_per_epoch + batch
            self.model.optimizer.learning_rate.assign(rewarm_rate(step, start, peak, warmup, total))

    return Rewarm()
