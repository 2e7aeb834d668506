"""Shared by bench/train_throughput.py and bench/train_pairs.py: the split, the in-memory input, steady
speeds, and this script running again as a worker process."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Workers run the measuring script itself again (`--worker`, `--pair-worker`).
SCRIPT = Path(__file__).with_name("train_throughput.py")

# Train images per epoch at each size: enough steps (>= 3 batches of 32) for an epoch of several seconds.
DEFAULT_IMAGES = {64: 512, 96: 384, 128: 256, 160: 192, 224: 128}
# --pairs: train images per epoch at every size, about the smallest set's (limb, ~1,100) epoch in a night.
# The pipeline's epoch-end checkpoints cost the same whatever an epoch holds, so an epoch of a few hundred
# images would charge them to the pipeline several times over what a night pays; this charges at most that.
PAIR_IMAGES = 1024


def images_for(size: int, override: int | None) -> int:
    return override or DEFAULT_IMAGES.get(size) or max(64, int(512 * (64 / size) ** 2))


def steady(seconds: list[float], images: int, skip: int = 1) -> dict:
    """Median images/s over the epochs after the first `skip`, with the min-max spread."""
    rates = [images / s for s in seconds[skip:]] or [images / s for s in seconds]
    median = statistics.median(rates)
    return {
        "images_per_second": median,
        "min": min(rates),
        "max": max(rates),
        "epochs": len(rates),
        "spread": (max(rates) - min(rates)) / median if median else None,
    }


def _split(data_root: Path, images: int, size: int, tmp: Path, execution: str = "graph"):
    """Return (config, profile, split manifest) with `images` train images and a small val split."""
    import pandas as pd

    from medcore.config import load_config
    from medcore.data.synthetic import write_demo_data
    from medcore.data.validation import validate_condition

    # Absolute: the path is written into a config in `tmp`, where a relative one would resolve elsewhere.
    data_root = data_root.resolve()
    if not (data_root / "pneumonia").is_dir():
        data_root = tmp / "phantoms"
        if not data_root.exists():
            write_demo_data(data_root, per_class=max(images, 64), size=max(size, 64))
        print(f"real data not found; using phantoms in {data_root}")
    config_path = tmp / f"bench{size}.yaml"
    config_path.write_text(
        f"extends: {ROOT / 'conditions.yaml'}\ndata_root: {data_root}\nruns_root: {tmp / 'runs'}\n"
        f"profiles:\n  bench: {{image_size: {size}, epochs: 3, patience: 99, batch_size: 32, execution: {execution}, "
        "precision: float32}\n"
    )
    os.environ.pop("MEDCORE_DATA_ROOT", None)
    config = load_config(config_path)
    frame = validate_condition(config, config.conditions["pneumonia"]).manifest
    train = frame[frame["split"] == "train"]
    train = train.sample(n=min(images, len(train)), random_state=0)
    val = frame[frame["split"] == "val"]
    val = val.sample(n=min(64, len(val)), random_state=0)
    return config, config.profiles["bench"], pd.concat([train, val])


def _tensors(frame, profile):
    import numpy as np

    from medcore.data.datasets import make_dataset

    images, labels = [], []
    for x, y in make_dataset(frame, profile, training=False, seed=0):
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def in_memory(x, y, batch_size: int, shuffle: bool, seed: int = 0):
    """In-memory tensors as the batches a plain fit reads, with the pipeline's tf.data options.

    Keras' own reader for numpy arrays autotunes, and dropping an autotuned iterator at an epoch's end
    could stall the process for tens of seconds here (medcore.data.datasets.input_options); both sides of a
    comparison read with the same options, so neither pays a stall the other does not.
    """
    import tensorflow as tf

    from medcore.data.datasets import PREFETCH_BATCHES, input_options

    data = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(PREFETCH_BATCHES).with_options(input_options())


def variant_name(mode: str, fused: bool) -> str:
    return f"{mode}+fused_bn" if fused else mode


@dataclasses.dataclass
class Worker:
    """This script running again as a worker process, with the file its stderr goes to."""

    proc: subprocess.Popen
    log: Any


def _spawn(arguments: list[str], env: dict[str, str] | None = None) -> Worker:
    """Start a worker; its stderr goes to a file, since a full pipe would stall it mid-measurement."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 closed by _result once the worker is done
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *arguments], stdout=subprocess.PIPE, stderr=log, text=True, env=env
    )
    return Worker(proc, log)


def _result(worker: Worker, timeout: float = 3600) -> dict:
    """The RESULT line a worker printed, as a dict; a worker that printed none fails with its last words."""
    out, _ = worker.proc.communicate(timeout=timeout)
    worker.log.seek(0)
    errors = worker.log.read()
    worker.log.close()
    line = [text for text in out.splitlines() if text.startswith("RESULT")]
    if worker.proc.returncode or not line:
        args = " ".join(worker.proc.args[2:])
        raise RuntimeError(f"worker {args} failed ({worker.proc.returncode}): {(out + errors)[-800:]}")
    return json.loads(line[0][6:])


def pipeline_fit(
    config, profile, split, epochs: int, tmp: Path, mode: str = "float32", fused: bool | None = None
) -> dict:
    """`medcore.model.training.train_model` as a night runs it, in precision `mode`; per-epoch seconds.

    `fused` sets the profile's fused batch norm (None keeps the profile's own, on by default). train_model
    applies that setting itself, so a `compute.fused_batch_norm(False)` block around this call cannot turn it off.
    """
    from medcore.layout import RunLayout
    from medcore.model.training import train_model

    profile = dataclasses.replace(profile, precision=mode)
    if fused is not None:
        profile = dataclasses.replace(profile, fused_batch_norm=fused)
    paths = RunLayout(tmp / "runs", f"bench{profile.image_size}-{mode}").model("pneumonia", profile.name)
    record = train_model(config, profile, split, paths, epochs=epochs)
    n = record["train_images"]
    return {
        "mode": mode,
        "epoch_seconds": record["epoch_seconds"],
        "images": n,
        "seconds_to_first_step": record["seconds_to_first_step"],
        "compute": record.get("compute"),
        **steady(record["epoch_seconds"], n, skip=1),
    }
