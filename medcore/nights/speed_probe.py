"""A short DenseNet121 training-step timing, for the night planner on a CPU kind no night has measured yet.

Run as a child process (`python -m medcore.nights.speed_probe`), so the planner never imports TensorFlow and the
probe's one-thread pools never become the pools of a training in the same process. It trains real
DenseNet121 steps at 128 px on random pixels, in the precision and batch-norm kernel `precision: auto`
picks for this CPU, on one intra-op thread as a one-core chain does, eagerly: the graph trace alone
(40-90 s) would cost more than the probe. Prints one JSON object. Its figure is only the first night's
guess: from then on the night's own training.json is the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Half the shipped profiles' batch and the batch itself: the slope is the cost of one more image where the
# night trains. Slopes between small batches (2 and 10) over-counted it by 39 % on an AVX2 EPYC (family 25
# model 1), where oneDNN's kernels grow more efficient with the batch; 16 to 32 was within 3 % (2026-12-07).
BATCHES = (16, 32)
# Each batch's least disturbed of at least this many steps: the night's probe with one step each was 39 % high.
MIN_STEPS = 3
PROBE_VERSION = 2  # a cached figure from another version is measured again


def probe(size: int, batches: tuple[int, int], seconds: float, min_steps: int = MIN_STEPS) -> dict:
    """CPU seconds per training image at `size`: the slope between steps at two batch sizes.

    Eager execution pays a fixed Python dispatch per op and step, about as much as the kernels at small
    batches, which would make every CPU look alike; the difference between a large and a small batch's
    step cancels it. CPU seconds of this process, not wall seconds: on a machine busy with other work the
    wall clock would measure the queue. The first step at each batch (optimizer slots, oneDNN primitives)
    is not timed; each batch is timed `min_steps` times, and again while `seconds` since the start allow.
    """
    start = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from medcore.config import Profile
    from medcore.model import compute
    from medcore.model.training import build_model

    compute.configure_threads(1, 2)
    choice = compute.choose_precision("auto")
    if (os.environ.get("ONEDNN_MAX_CPU_ISA") or "ALL").upper().startswith(("AVX2", "AVX_", "SSE")):
        # An emulated AVX2-only CPU: oneDNN has no bf16 kernels below AVX-512 (the flags still list them).
        choice = {"requested": "auto", "mode": "float32", "reason": "ONEDNN_MAX_CPU_ISA below AVX-512"}
    rng = np.random.default_rng(0)
    data = {
        b: (
            tf.constant(rng.uniform(0, 255, (b, size, size, 3)).astype("float32")),
            tf.constant(rng.integers(0, 2, (b, 1)).astype("float32")),
        )
        for b in batches
    }
    steps: dict[int, list[float]] = {b: [] for b in batches}
    with compute.precision_mode(choice["mode"]), compute.fused_batch_norm(True):
        model = build_model(Profile("probe", image_size=size, execution="eager"), seed=0)
        for b in batches:
            model.train_on_batch(*data[b])  # not timed
        while min(map(len, steps.values())) < min_steps or time.perf_counter() - start < seconds:
            for b in batches:
                t = time.process_time()
                model.train_on_batch(*data[b])
                steps[b].append(time.process_time() - t)
    small, large = (min(steps[b]) for b in batches)  # the least disturbed step of each
    per_image = max(large - small, 1e-6) / (batches[1] - batches[0])
    return {
        "image_size": size,
        "batches": list(batches),
        "steps": sum(len(v) for v in steps.values()),
        "step_cpu_seconds": {str(b): round(min(v), 3) for b, v in steps.items()},
        "seconds_per_image": per_image,
        "precision": choice["mode"],
        "execution": "eager, 1 intra-op thread, CPU seconds, slope between two batch sizes",
        "version": PROBE_VERSION,
        "wall_seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs=2, default=BATCHES)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.size, tuple(sorted(args.batches)), args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
