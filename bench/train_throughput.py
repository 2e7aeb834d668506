"""Training throughput of medcore's pipeline against a plain `model.fit` on in-memory tensors.

Usage: .venv/bin/python bench/train_throughput.py [--sizes 128 224] [--images 384] [--epochs 3]

Everything is measured in one run of this script, because this machine is shared and noisy:
only ratios taken side by side mean anything. For each image size it reports
  - pipeline: `medcore.training.train_model` (tf.data from files, callbacks, validation)
  - plain:    `model.fit` on the same images as in-memory tensors, same model, batch, precision
  - steady-state images/s (median epoch after the first, which carries the graph trace)
  - time to the first training step (trace and graph optimisation)
  - float32 against mixed_bfloat16 (plain fit)
  - one process with 2 threads against two concurrent processes with 1 thread each
The last line is `ratio=<pipeline / plain, worst size>`. Raw figures go to bench/results/.
Data: the real pneumonia set under $MEDCORE_DATA_ROOT (default ../shared/datasets), else phantoms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _split(data_root: Path, images: int, size: int, tmp: Path):
    """Return (config, profile, split manifest) with `images` train images and a small val split."""
    from medcore.config import load_config
    from medcore.synthetic import write_demo_data
    from medcore.validation import validate_condition

    if not (data_root / "pneumonia").is_dir():
        data_root = tmp / "phantoms"
        if not data_root.exists():
            write_demo_data(data_root, per_class=max(images, 64), size=size)
        print(f"real data not found; using phantoms in {data_root}")
    config_path = tmp / f"bench{size}.yaml"
    config_path.write_text(
        f"extends: {ROOT / 'conditions.yaml'}\ndata_root: {data_root}\nruns_root: {tmp / 'runs'}\n"
        f"profiles:\n  bench: {{image_size: {size}, epochs: 3, patience: 99, batch_size: 32, execution: graph}}\n")
    os.environ.pop("MEDCORE_DATA_ROOT", None)
    config = load_config(config_path)
    result = validate_condition(config, config.conditions["pneumonia"])
    frame = result.manifest
    train = frame[frame["split"] == "train"].sample(n=min(images, int((frame["split"] == "train").sum())),
                                                   random_state=0)
    val = frame[frame["split"] == "val"].sample(n=min(64, int((frame["split"] == "val").sum())), random_state=0)
    import pandas as pd

    return config, config.profiles["bench"], pd.concat([train, val])


def _tensors(frame, profile):
    import numpy as np

    from medcore.datasets import make_dataset

    images, labels = [], []
    for x, y in make_dataset(frame, profile, training=False, seed=0):
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _plain_fit(config, profile, split, epochs: int, precision: str = "float32") -> dict:
    """model.fit on in-memory tensors with the same model and batch; per-epoch seconds."""
    import dataclasses

    import keras

    from medcore.training import build_model, precision_policy

    profile = dataclasses.replace(profile, precision=precision)
    x, y = _tensors(split[split["split"] == "train"], profile)
    vx, vy = _tensors(split[split["split"] == "val"], profile)
    seconds: list[float] = []
    first: list[float] = []
    start = time.perf_counter()

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t)

        def on_train_batch_end(self, batch, logs=None):
            if not first:
                first.append(time.perf_counter() - start)

    with precision_policy(profile) as used:
        keras.utils.set_random_seed(config.seed)
        model = build_model(profile, config.seed)
        model.fit(x, y, batch_size=profile.batch_size, epochs=epochs, validation_data=(vx, vy), verbose=0,
                  shuffle=True, callbacks=[Timer()])
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return {"precision": used, "epoch_seconds": seconds, "steady_images_per_second": len(x) / steady,
            "seconds_to_first_step": first[0] if first else None, "images": len(x)}


def _pipeline_fit(config, profile, split, epochs: int, tmp: Path) -> dict:
    from medcore.layout import RunLayout
    from medcore.training import train_model

    paths = RunLayout(tmp / "runs", f"bench{profile.image_size}").model("pneumonia", profile.name)
    record = train_model(config, profile, split, paths, epochs=epochs)
    seconds = record["epoch_seconds"]
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    n = record["train_images"]
    return {"epoch_seconds": seconds, "steady_images_per_second": n / steady,
            "seconds_to_first_step": record["seconds_to_first_step"], "images": n}


def _worker(args) -> None:
    """Subprocess mode: a plain fit with a fixed thread count, printing its images/s as JSON."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        config, profile, split = _split(Path(args.data_root), args.images, args.size, Path(tmp))
        result = _plain_fit(config, profile, split, args.epochs)
    print("RESULT" + json.dumps(result))


def _concurrent(args, size: int, threads: int, processes: int) -> float:
    """Sum of steady images/s over `processes` plain fits running at once with `threads` each."""
    command = [sys.executable, __file__, "--worker", "--threads", str(threads), "--size", str(size),
               "--images", str(args.images // processes), "--epochs", str(args.epochs), "--data-root", args.data_root]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for _ in range(processes)]
    total = 0.0
    for worker in workers:
        out, _ = worker.communicate(timeout=3600)
        line = [l for l in out.splitlines() if l.startswith("RESULT")]
        if not line:
            raise RuntimeError(f"worker failed: {out[-500:]}")
        total += json.loads(line[0][6:])["steady_images_per_second"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--images", type=int, default=384, help="train images per measurement")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-root", default=os.environ.get("MEDCORE_DATA_ROOT", str(ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--skip-threads", action="store_true", help="skip the 1x2 vs 2x1 thread comparison")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=128, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)

    from medcore.training import cpu_supports_bf16

    results: dict = {"images": args.images, "epochs": args.epochs, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            config, profile, split = _split(Path(args.data_root), args.images, size, Path(tmp))
            pipeline = _pipeline_fit(config, profile, split, args.epochs, Path(tmp))
            plain = _plain_fit(config, profile, split, args.epochs)
            row = {"pipeline": pipeline, "plain": plain,
                   "ratio": pipeline["steady_images_per_second"] / plain["steady_images_per_second"]}
            if cpu_supports_bf16():
                row["plain_bf16"] = _plain_fit(config, profile, split, args.epochs, "mixed_bfloat16")
            if not args.skip_threads:
                row["one_task_2_threads"] = _concurrent(args, size, 2, 1)
                row["two_tasks_1_thread"] = _concurrent(args, size, 1, 2)
            results["sizes"][size] = row
            print(f"{size}px: pipeline {pipeline['steady_images_per_second']:.1f} img/s, plain "
                  f"{plain['steady_images_per_second']:.1f} img/s, ratio {row['ratio']:.3f}; first step "
                  f"{pipeline['seconds_to_first_step']:.1f}s (pipeline) / {plain['seconds_to_first_step']:.1f}s (plain)")
            if "plain_bf16" in row:
                print(f"{size}px: mixed_bfloat16 {row['plain_bf16']['steady_images_per_second']:.1f} img/s vs float32 "
                      f"{plain['steady_images_per_second']:.1f} img/s")
            if "two_tasks_1_thread" in row:
                print(f"{size}px: 1 task x 2 threads {row['one_task_2_threads']:.1f} img/s, 2 tasks x 1 thread "
                      f"{row['two_tasks_1_thread']:.1f} img/s (sum)")
    from bench.common import write_result

    out = write_result("train_throughput", results)
    print(f"raw results: {out}")
    print(f"ratio={min(r['ratio'] for r in results['sizes'].values()):.3f}")


if __name__ == "__main__":
    main()
