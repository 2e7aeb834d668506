"""A short DenseNet121 training-step timing, for the night planner on a CPU kind no night has measured yet.

Run as a child process (`python -m medcore.probe`), so the planner never imports TensorFlow and the
probe's one-thread pools never become the pools of a training in the same process. It trains real
DenseNet121 steps at 128 px on random pixels, in the precision and batch-norm kernel `precision: auto`
picks for this CPU, on one intra-op thread as a one-core chain does, eagerly: the graph trace alone
(40-90 s) would not fit in 30 s. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def probe(size: int, batch: int, seconds: float) -> dict:
    """CPU seconds per training image at `size`, from steps timed until `seconds` have passed since the start.

    CPU seconds of this process, not wall seconds: on a machine busy with other work the wall clock
    would measure the queue. The first step (optimizer slots) is not timed; at least one step is.
    """
    start = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from medcore import compute
    from medcore.config import Profile
    from medcore.training import build_model

    compute.configure_threads(1, 2)
    choice = compute.choose_precision("auto")
    if (os.environ.get("ONEDNN_MAX_CPU_ISA") or "ALL").upper().startswith(("AVX2", "AVX_", "SSE")):
        # An emulated AVX2-only CPU: oneDNN has no bf16 kernels below AVX-512 (the flags still list them).
        choice = {"requested": "auto", "mode": "float32", "reason": "ONEDNN_MAX_CPU_ISA below AVX-512"}
    profile = Profile("probe", image_size=size, batch_size=batch, execution="eager")
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, 2, (batch, 1)).astype("float32"))
    steps = []
    with compute.precision_mode(choice["mode"]), compute.fused_batch_norm(True):
        model = build_model(profile, seed=0)
        model.train_on_batch(images, labels)  # builds the optimizer's slots: not timed
        while not steps or time.perf_counter() - start < seconds:
            t = time.process_time()
            model.train_on_batch(images, labels)
            steps.append(time.process_time() - t)
    steps.sort()
    return {
        "image_size": size,
        "batch": batch,
        "steps": len(steps),
        "seconds_per_image": steps[len(steps) // 2] / batch,
        "precision": choice["mode"],
        "execution": "eager, 1 intra-op thread, process CPU seconds",
        "wall_seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.size, args.batch, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
