"""Scoring with a saved model: load the .keras file safely, predict a split, score new files (`medcore predict`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from medcore.assess.calibration import sigmoid
from medcore.config import Profile
from medcore.data.datasets import IMAGE_SUFFIXES, make_dataset
from medcore.errors import MedcoreError

__all__ = [
    "MAX_MODEL_BYTES",
    "MAX_MODEL_RATIO",
    "check_model_archive",
    "load_model",
    "predict_logits",
    "predict_probabilities",
    "list_images",
    "refusals",
    "predict_files",
]

# DenseNet121's weights are 32 MB as float32; a .keras inflating past this, or a member inflating more than
# MAX_MODEL_RATIO times (weights barely compress), is a decompression bomb, refused from the zip directory.
MAX_MODEL_BYTES = 512 * 2**20
MAX_MODEL_RATIO = 100


def check_model_archive(path) -> None:
    """Refuse a .keras zip whose members would inflate too far, before Keras extracts anything."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip at all: Keras' own error says so
    total = sum(m.file_size for m in members)
    if total > MAX_MODEL_BYTES:
        raise MedcoreError(
            f"{path}: not a loadable .keras model (members sum to {total} bytes uncompressed, "
            f"over {MAX_MODEL_BYTES // 2**20} MiB)"
        )
    for member in members:
        if member.file_size > 2**20 and member.file_size > MAX_MODEL_RATIO * max(member.compress_size, 1):
            raise MedcoreError(
                f"{path}: not a loadable .keras model ({member.filename[:60]!r} inflates "
                f"{member.file_size // max(member.compress_size, 1)}:1, over {MAX_MODEL_RATIO}:1)"
            )


# `medcore run` evaluates and explains a model in one process: the second load of the same file is the first's
# model (rebuilding DenseNet121 from a .keras takes seconds). Keyed on the file's identity, so a rewritten model is
# read afresh; two entries hold a candidate and the champion it is compared with.
_LOADED: OrderedDict[tuple[str, int, int, int], Any] = OrderedDict()
_LOADED_MAX = 2


def load_model(path, eager: bool = False):
    """Load a `.keras` model in Keras safe mode (no arbitrary code from the file), after checking its zip sizes.

    A file loaded before in this process, unchanged since (same inode, size and modification time), gives
    the same model object: callers must leave its weights as they found them (the sanity check restores
    what it randomises). The zip sizes are checked on every call, cached or not: the limits are what they are now."""
    check_model_archive(path)
    key = _file_key(path)
    model = _LOADED.get(key) if key else None
    if model is None:
        model = _load_model(path)
    if key:
        _LOADED[key] = model
        _LOADED.move_to_end(key)
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
    model.run_eagerly = eager
    return model


def _file_key(path) -> tuple[str, int, int, int] | None:
    """The file's identity (path, inode, size, modification time); None if it is not there (Keras then says so)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns


def _load_model(path):
    import zipfile

    import keras

    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    # What Keras raises for a file that is not a model it can build: no config.json in the zip (KeyError),
    # a class it does not know (TypeError), not a zip at all (ValueError, BadZipFile).
    except (KeyError, TypeError, ValueError, OSError, AttributeError, zipfile.BadZipFile) as exc:
        problem = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise MedcoreError(f"{path}: not a loadable .keras model ({type(exc).__name__}: {problem})") from None
    return model


def predict_logits(model, frame: pd.DataFrame, profile: Profile) -> np.ndarray:
    """Return the model's logit for every row of `frame` (columns `path`, `label`), in order."""
    data = make_dataset(frame, profile, training=False, seed=0).map(lambda image, label: image)
    if profile.execution == "eager":
        logits = np.concatenate([model(batch, training=False).numpy() for batch in data])
    else:
        logits = model.predict(data, verbose=0)
    return logits.reshape(-1).astype(np.float64)


def predict_probabilities(model, frame: pd.DataFrame, profile: Profile, temperature: float = 1.0) -> np.ndarray:
    """Return P(positive) for every row of `frame` (columns `path`, `label`), in order, at `temperature`."""
    return sigmoid(predict_logits(model, frame, profile), temperature)


def list_images(source: str | Path, column: str | None = None) -> list[Path]:
    """The images to score: every image file under a folder, or the paths in a CSV column.

    CSV paths may be relative to the CSV's folder. Raises MedcoreError naming what is missing.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(f for f in source.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise MedcoreError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return files
    if not source.is_file():
        raise MedcoreError(f"{source}: no such folder or CSV file")
    try:
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MedcoreError(f"{source}: cannot read as CSV: {str(exc).splitlines()[0]}") from None
    candidates = [column] if column else ["path", "image", "relpath"]
    found = next((c for c in candidates if c in table.columns), None)
    if found is None:
        raise MedcoreError(
            f"{source}: no column {' or '.join(repr(c) for c in candidates)} "
            f"(columns: {', '.join(map(str, table.columns))}); pick one with --column"
        )
    files = [p if p.is_absolute() else source.parent / p for p in (Path(v.strip()) for v in table[found])]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise MedcoreError(f"{source}: {len(missing)} of {len(files)} images not found, first {missing[0]}")
    if not files:
        raise MedcoreError(f"{source}: the CSV lists no images")
    return files


def refusals(files: Sequence[Path]) -> list[str]:
    """Why each file cannot be scored ("" if it can), by validation's own guards: the same strict JPEG decode,
    size limits read from the header before decoding (PNG, JPEG, DICOM incl. compressed) and decoding budget."""
    from medcore.data.validation import scan_files

    scans = scan_files([str(f) for f in files], [True] * len(files))
    return ["" if s.status == "ok" else f"{s.status}: {s.detail}".rstrip(": ") for s in scans]


def _first_undecodable(files: Sequence[Path]) -> Path | None:
    import tensorflow as tf

    from medcore.data.datasets import _is_dicom_file
    from medcore.data.dicom import load_pixels

    for file in files:
        try:
            if _is_dicom_file(str(file)):
                load_pixels(str(file))
            else:
                tf.io.decode_image(tf.io.read_file(str(file)), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, ValueError, OSError):
            return file
    return None


def predict_files(
    model,
    files: Sequence[Path],
    batch_size: int = 32,
    temperature: float = 1.0,
    resize: Literal["squash", "pad"] = "squash",
) -> np.ndarray:
    """P(positive) = sigmoid(logit / temperature) for each file, decoded and resized exactly as in training."""
    import tensorflow as tf

    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise MedcoreError(f"model input shape {shape} is not a fixed square image")
    size = int(shape[1])
    frame = pd.DataFrame({"path": [str(f) for f in files], "label": np.zeros(len(files), np.float32)})
    profile = Profile("predict", image_size=size, batch_size=batch_size, execution="graph", resize=resize)
    try:
        return predict_probabilities(model, frame, profile, temperature)
    except tf.errors.InvalidArgumentError:
        bad = _first_undecodable(files)
        raise MedcoreError(f"{bad or files[0]}: cannot decode image") from None
