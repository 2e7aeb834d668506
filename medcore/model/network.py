"""DenseNet121 as medcore trains it: Keras-style builders, its weight sources, compiling, warm starts by layer."""

from __future__ import annotations

import os
from pathlib import Path

from medcore.config import Profile
from medcore.errors import MedcoreError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGENET_WEIGHTS_FILE",
    "build_network",
    "build_model",
    "compile_model",
    "set_backbone_trainable",
    "warm_start_from",
]

# ImageNet channel statistics (DenseNet's "torch" preprocessing), inside the model so a saved
# model takes raw 0-255 pixels and nobody downstream has to remember the recipe.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_WEIGHTS_FILE = "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _backbone(x, weights: str):
    import keras

    if weights in ("none", "champion", "shared"):  # a champion's or the shared backbone's weights are copied in later
        return keras.applications.DenseNet121(include_top=False, weights=None, input_tensor=x, pooling="avg")
    if weights == "imagenet":
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / IMAGENET_WEIGHTS_FILE
        try:
            return keras.applications.DenseNet121(include_top=False, weights="imagenet", input_tensor=x, pooling="avg")
        except Exception as exc:  # no network here: Keras' download fails with a URL or HTTP error
            raise MedcoreError(
                f"ImageNet weights unavailable ({type(exc).__name__}); place {IMAGENET_WEIGHTS_FILE} at {cache} "
                "or set the profile's weights to a local file or none"
            ) from exc
    try:
        return keras.applications.DenseNet121(include_top=False, weights=weights, input_tensor=x, pooling="avg")
    except (ValueError, OSError) as exc:
        raise MedcoreError(f"{weights}: not DenseNet121 (include_top=False) weights: {exc}") from exc


def build_network(profile: Profile, seed: int, outputs: int = 1, head: str = "logit"):
    """Return an uncompiled DenseNet121 emitting `outputs` float32 logits from a Dense layer named `head`.

    Augmentation, rescaling and ImageNet normalisation are layers of the model, so a saved model
    takes raw 0-255 pixels. Layer `relu` is DenseNet121's final activation (the Grad-CAM target).
    """
    import keras

    size = profile.image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    aug = profile.augmentation
    if aug.rotation:
        x = keras.layers.RandomRotation(aug.rotation, fill_mode="constant", seed=seed, name="aug_rotation")(x)
    if aug.zoom:
        x = keras.layers.RandomZoom(aug.zoom, fill_mode="constant", seed=seed, name="aug_zoom")(x)
    if aug.contrast:
        x = keras.layers.RandomContrast(aug.contrast, value_range=(0, 255), seed=seed, name="aug_contrast")(x)
    if aug.horizontal_flip:
        x = keras.layers.RandomFlip("horizontal", seed=seed, name="aug_flip")(x)
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(x)
    x = keras.layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="imagenet_norm")(x)
    # input_tensor makes DenseNet's layers part of this graph, so `relu` is reachable by name.
    backbone = _backbone(x, profile.weights)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = profile.batch_norm_momentum
    x = keras.layers.Dropout(0.2, seed=seed, name="dropout")(backbone.output)
    logits = keras.layers.Dense(outputs, name=head, dtype="float32")(x)  # float32 logits even under bf16
    return keras.Model(inputs, logits, name="densenet121_binary" if outputs == 1 else f"densenet121_{outputs}_tasks")


def build_model(profile: Profile, seed: int):
    """Return a compiled, functional DenseNet121 binary classifier emitting one float32 logit.

    Args:
        profile: image size, augmentation, weight source and learning rate.
        seed: seeds the augmentation and dropout layers.
    Returns:
        A `keras.Model` whose layer `relu` is DenseNet121's final activation (the Grad-CAM target).
    """
    model = build_network(profile, seed)
    compile_model(model, profile, profile.learning_rate)
    return model


def compile_model(model, profile: Profile, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.AUC(from_logits=True, name="auc"),
            keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
        ],
        run_eagerly=profile.execution == "eager",
    )


def set_backbone_trainable(model, trainable: bool) -> None:
    # Frozen BatchNorm layers also run in inference mode in Keras 3, which is what fine-tuning needs.
    head = {"dropout", "logit"}
    for layer in model.layers:
        if layer.name not in head and layer.weights:
            layer.trainable = trainable


def warm_start_from(model, source: Path) -> int:
    """Copy weights from the saved model at `source` into `model`, layer by name; return layers copied.

    Convolution weights do not depend on the image size, so a champion trained at another size
    still starts the new model; layers whose shapes differ keep their fresh initialisation.
    """
    import keras

    from medcore.assess.predict import check_model_archive

    check_model_archive(source)
    saved = keras.models.load_model(source, safe_mode=True, compile=False)
    theirs = {layer.name: layer for layer in saved.layers}
    copied = 0
    for layer in model.layers:
        other = theirs.get(layer.name)
        if other is None or not layer.weights:
            continue
        weights = other.get_weights()
        if [w.shape for w in weights] == [tuple(v.shape) for v in layer.weights]:
            layer.set_weights(weights)
            copied += 1
    if not copied:
        raise MedcoreError(f"{source}: no layer of the saved model matches this model; cannot warm start")
    return copied
