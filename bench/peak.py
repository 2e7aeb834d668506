"""The ceiling: this CPU's FP32 and BF16 matmul peak, and DenseNet121's training FLOPs per image.

Usage: .venv/bin/python bench/peak.py [--sizes 64 96 128 224] [--matrix 2048] [--seconds 3]

Peak: the best of several timed bursts of square `tf.matmul`s (oneDNN's GEMM, every thread TensorFlow
starts), in float32 and in bfloat16 with float32 accumulation (what mixed_bfloat16 convolutions use).
A matmul of n x n by n x n is 2 n^3 floating-point operations.

FLOPs: TensorFlow's own cost model (`tf.compat.v1.profiler`, float_operation) over the frozen
inference graph of the model medcore trains (`medcore.model.training.build_network`, one image, training
layers such as augmentation and dropout inactive). Convolutions and matmuls count 2 per
multiply-add; batch norm, ReLU and pooling add what TF registers for them. Training is taken as 3x
the forward pass (the backward pass computes a gradient for the input and one for the weights of
every layer, each about as costly as the forward pass); the record states this factor.

Writes bench/results/peak.json; train_throughput.py and report.py read it to state every training
speed as a share of peak.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TRAINING_FACTOR = 3.0  # forward + backward (input gradient + weight gradient), each about one forward pass


def matmul_peak(dtype: str, n: int = 2048, seconds: float = 3.0, repeat: int = 8) -> dict:
    """GFLOP/s of the best burst of `repeat` n x n matmuls in `dtype`, bursts repeated for `seconds`."""
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function
    def burst(x, y):
        acc = tf.zeros((), tf.float32)
        for _ in range(repeat):  # unrolled: one graph, no Python between matmuls
            acc += tf.cast(tf.linalg.matmul(x, y)[0, 0], tf.float32)
            x = x + tf.cast(1e-3, dtype)  # a new input each time, so no result can be reused
        return acc

    burst(a, b).numpy()  # trace and warm up
    best, bursts, end = float("inf"), 0, time.perf_counter() + seconds
    while time.perf_counter() < end or bursts < 3:
        start = time.perf_counter()
        burst(a, b).numpy()
        best = min(best, time.perf_counter() - start)
        bursts += 1
    flops = 2.0 * n**3 * repeat
    return {
        "dtype": dtype,
        "matrix": n,
        "matmuls_per_burst": repeat,
        "bursts": bursts,
        "best_burst_seconds": best,
        "gflops": flops / best / 1e9,
    }


def forward_flops(size: int) -> float:
    """Floating-point operations of one DenseNet121 forward pass at `size` px, by TF's cost model."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from medcore.config import Profile
    from medcore.model.training import build_network

    model = build_network(Profile(name="flops", image_size=size), seed=0)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, size, size, 3), tf.float32)
    )
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    stats = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options)
    return float(stats.total_float_ops)


def load_peak(results: Path | None = None) -> dict | None:
    """bench/results/peak.json as written by this script, or None when it was not run."""
    import json

    path = (results or ROOT / "bench" / "results") / "peak.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def share_of_peak(
    images_per_second: float | None, size: int, peak: dict | None, dtype: str = "float32"
) -> float | None:
    """Training FLOP/s reached at `images_per_second`, as a fraction of the measured `dtype` matmul peak."""
    if not images_per_second or not peak:
        return None
    per_image = (peak.get("training_flops_per_image") or {}).get(str(size))
    top = (peak.get("peak") or {}).get(dtype, {}).get("gflops")
    if not per_image or not top:
        return None
    return images_per_second * per_image / (top * 1e9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 224])
    parser.add_argument("--matrix", type=int, default=2048)
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent on each dtype's peak")
    parser.add_argument("--no-write", action="store_true", help="print only (tests)")
    parser.add_argument("--out", default="peak", help="results file name under bench/results/ (e.g. peak_amx)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    peak = {dtype: matmul_peak(dtype, args.matrix, args.seconds) for dtype in ("float32", "bfloat16")}
    for dtype, row in peak.items():
        print(f"{dtype} matmul peak: {row['gflops']:.0f} GFLOP/s ({row['matrix']}^2, best of {row['bursts']} bursts)")
    forward = {str(size): forward_flops(size) for size in args.sizes}
    for size, flops in forward.items():
        print(f"{size} px: forward {flops / 1e9:.3f} GFLOP/image, training ~{TRAINING_FACTOR * flops / 1e9:.2f}")
    payload = {
        "peak": peak,
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or "default",
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "default",
        },
        "forward_flops_per_image": forward,
        "training_factor": TRAINING_FACTOR,
        "training_flops_per_image": {s: TRAINING_FACTOR * f for s, f in forward.items()},
        "flops_method": "tf.compat.v1.profiler float_operation on the frozen inference graph of "
        "medcore.model.training.build_network (batch 1); training = 3 x forward",
        "load": os.getloadavg(),
    }
    if not args.no_write:
        from bench.common import write_result

        print(f"raw results: {write_result(args.out, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
