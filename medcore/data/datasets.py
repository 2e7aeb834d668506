"""Feeding manifests to TensorFlow: tf.data pipelines, image loading, border masks and erasing.

Reading a dataset into a manifest lives in medcore.data.sources, labels and splits in
medcore.data.splits; both are re-exported here, where callers have always found them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd

from medcore.config import Profile
from medcore.data.sources import (
    COLUMNS,
    IMAGE_SUFFIXES,
    SOURCE_COLUMNS,
    Source,
    read_manifest,
    read_source,
    read_studies,
)
from medcore.data.splits import (
    SPLITS,
    assign_splits,
    cap_per_split,
    classify_labels,
    label_manifest,
    parse_label,
    split_balance,
    split_draw,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "band_mask",
    "load_images",
    "SPLITS",
    "COLUMNS",
    "SOURCE_COLUMNS",
    "Source",
    "read_source",
    "read_manifest",
    "label_manifest",
    "classify_labels",
    "parse_label",
    "split_draw",
    "split_balance",
    "assign_splits",
    "cap_per_split",
    "make_dataset",
    "border_eraser",
    "image_dataset",
    "padded_box",
    "content_masks",
    "read_studies",
]


def make_dataset(frame: pd.DataFrame, profile: Profile, *, training: bool, seed: int):
    """Return a batched tf.data pipeline of (uint8-range float image, float label) pairs.

    Decodes each file once (caching the resized tensors), turns grayscale into three channels,
    and prefetches, so training does not wait on disk or JPEG decoding.
    """
    data = image_dataset(
        frame["path"].to_numpy(dtype=str),
        frame["label"].to_numpy(dtype=np.float32),
        profile.image_size,
        profile.batch_size,
        training=training,
        seed=seed,
        resize=profile.resize,
    )
    erase = profile.augmentation.border_erase
    if training and erase > 0:
        data = data.map(border_eraser(profile.image_size, profile.augmentation.border_band, erase, seed))
    return data


def band_mask(size: int, band: float) -> np.ndarray:
    """Boolean (size, size): True in the outer band `band` x size pixels wide (at least one) on every side."""
    width = max(1, int(round(band * size)))
    mask = np.ones((size, size), bool)
    mask[width : size - width, width : size - width] = False
    return mask


def load_images(paths: Sequence[str | Path], size: int, batch_size: int = 32, resize: str = "squash") -> np.ndarray:
    """Decode and resize files exactly as training and evaluation do; float32 (N, size, size, 3), 0-255.

    `resize` must be the model's (model.json): `squash` or `pad`.
    """
    from medcore.config import Profile

    if len(paths) == 0:
        return np.zeros((0, size, size, 3), np.float32)
    frame = pd.DataFrame({"path": [str(p) for p in paths], "label": np.zeros(len(paths), np.float32)})
    # Profile validates `resize` at run time (anything but squash/pad still raises there); the cast is typing only.
    profile = Profile(
        "gradcam", image_size=size, batch_size=batch_size, resize=cast("Literal['squash', 'pad']", resize)
    )
    data = make_dataset(frame, profile, training=False, seed=0)
    return np.concatenate([images.numpy() for images, _ in data]).astype(np.float32)


def border_eraser(size: int, band: float, share: float, seed: int):
    """A batch map: each image's outer band (`band` of the side) becomes the image's mean, with probability `share`.

    Training only: the mitigation for the border shortcut the probes look for (medcore.assess.probes).
    """
    import tensorflow as tf

    mask = tf.constant(band_mask(size, band)[None, :, :, None])
    generator = tf.random.Generator.from_seed(seed)

    def erase(images, *rest):
        hit = generator.uniform((tf.shape(images)[0], 1, 1, 1)) < share
        mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
        return (tf.where(tf.logical_and(hit, mask), mean, images), *rest)

    return erase


def padded_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image inside a `size` square after `resize: pad` (tf.image.resize_with_pad)."""
    ratio = max(width / size, height / size)
    inner_h, inner_w = int(height / ratio), int(width / ratio)
    return (size - inner_h) // 2, (size - inner_w) // 2, inner_h, inner_w


def content_masks(paths: list[str], size: int, resize: str) -> np.ndarray:
    """Boolean (N, size, size): True where the square holds the image, False on `pad` padding (read from headers)."""
    from PIL import Image

    masks = np.ones((len(paths), size, size), dtype=bool)
    if resize != "pad":
        return masks
    for mask, path in zip(masks, paths):
        if _is_dicom_file(str(path)):
            from medcore.data.dicom import load_pixels

            height, width = load_pixels(str(path)).shape[:2]
        else:
            with Image.open(path) as image:
                width, height = image.size
        top, left, inner_h, inner_w = padded_box(height, width, size)
        mask[:] = False
        mask[top : top + inner_h, left : left + inner_w] = True
    return masks


def _is_dicom_file(path: str) -> bool:
    """Sniff the DICOM preamble (content, not the name, decides, as in validation)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False  # decode_image names the file when it fails


def image_dataset(
    paths: np.ndarray,
    targets: np.ndarray,
    size: int,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    sample_weights: np.ndarray | None = None,
    resize: str = "squash",
):
    """Return batches of (image, target[, sample weight]) with images decoded once, resized to `size`, cached.

    `resize` is `squash` (stretch to the square) or `pad` (keep the aspect ratio, pad with black).

    DICOM files go through medcore.data.dicom (rescale, VOI LUT or window, MONOCHROME1 inverted) as float32
    0-255, so their 10-16 bits are kept until this resize; other files through tf.io.decode_image.
    The cache holds the decoded, resized tensors, so DICOM is parsed in the first epoch only.
    """
    import tensorflow as tf

    if resize not in ("squash", "pad"):
        raise ValueError(f"resize must be 'squash' or 'pad', got {resize!r}")
    dicom = np.array([_is_dicom_file(str(p)) for p in paths], dtype=bool)

    def read_dicom(path):
        from medcore.data.dicom import load_pixels

        image = tf.numpy_function(load_pixels, [path], tf.float32, stateful=False)
        image.set_shape((None, None, 3))
        return image

    def decode(path):
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    def load(path, is_dicom, *rest):
        if not dicom.any():
            image = decode(path)  # uint8 into the antialiased resize: measured leaner than any float copy first
        elif dicom.all():
            image = read_dicom(path)
        else:
            image = tf.cond(is_dicom, lambda: read_dicom(path), lambda: tf.cast(decode(path), tf.float32))
        if resize == "pad":
            image = tf.image.resize_with_pad(image, size, size, antialias=True)
        else:
            image = tf.image.resize(image, (size, size), antialias=True)
        image.set_shape((size, size, 3))
        return (image, *rest)

    columns = (
        (paths, dicom, targets)
        if sample_weights is None
        else (paths, dicom, targets, sample_weights.astype(np.float32))
    )
    data = tf.data.Dataset.from_tensor_slices(columns)
    data = data.map(load, num_parallel_calls=os.cpu_count() or 1, deterministic=True).cache()
    if training:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(PREFETCH_BATCHES).with_options(input_options())


# Batches read ahead: the cached, decoded tensors are ready at once, so a step never waits for more.
PREFETCH_BATCHES = 2


def input_options():
    """tf.data options for every dataset that feeds a model: autotuning off.

    With autotuning on, each iterator runs a model thread that sleeps between tuning rounds, and Keras
    drops the epoch's iterator at every epoch end; on these VMs that drop often waited for the thread's
    sleep to end, with the process's threads all blocked and the CPU idle for up to tens of seconds an
    epoch (docs/decisions/0006-tf-data-autotune-off.md, issue 16). Decoding happens once (the cache), so
    fixed parallelism and a fixed read-ahead lose nothing that tuning would find.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options
