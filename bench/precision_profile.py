"""Where a DenseNet121 training step spends its time under each precision: oneDNN's verbose log and TF's profiler.

Usage: .venv/bin/python bench/precision_profile.py [--size 128] [--steps 4]
       [--variants float32 mixed_bfloat16 onednn_amp mixed_bfloat16+fused_bn float32+fpmath_bf16]

Each variant runs in its own process with ONEDNN_VERBOSE=1, so oneDNN prints every primitive it
executes with its implementation (e.g. `brgconv_1x1:avx512_core_bf16`, `jit:avx512_core_amx`) and
its time. The model (`medcore.model.training.build_model`) is built and traced first; then `--steps`
training steps run under TensorFlow's profiler, between two markers. From the lines between the
markers it reports oneDNN time per primitive kind and implementation, and from the profiler's trace
the time of TensorFlow ops by kind: convolutions (oneDNN), batch norm (the ops of the `_bn` layers),
concatenations, casts, ReLU, pooling, the optimizer, everything else. Op times are summed over
TensorFlow's inter-op threads, so they are shares of the work, not of wall time.

Variants: a precision of medcore.model.compute (float32, mixed_bfloat16, onednn_amp), optionally with
`+fused_bn` (medcore.model.compute.fused_batch_norm) or `+fpmath_bf16` (oneDNN's
ONEDNN_DEFAULT_FPMATH_MODE=BF16: float32 primitives may compute in bfloat16).
Writes bench/results/precision_profile.json.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MARK = "MEDCORE_PROFILE_MARK"
CATEGORIES = ("convolution", "batch norm", "concatenation", "cast", "relu", "pooling", "optimizer", "other")
# Trace events that span the ops they run rather than doing work: the executor's `...:Process` event lasts as
# long as every op it schedules, so counting it would double the total and show up as half the time "other".
CONTAINER_OPS = frozenset({"Process"})


def op_category(name: str, op: str) -> str | None:
    """The kind of work a TensorFlow op (node name, op type) does in a DenseNet121 training step (None: a container)."""
    if op in CONTAINER_OPS:
        return None
    low, kind = name.lower(), op.lower()
    if "conv2d" in kind or "matmul" in kind:
        return "convolution"
    if kind == "cast":
        return "cast"
    if "concat" in kind or "_concat" in low:
        return "concatenation"
    if re.search(r"(^|/|_)bn(_\d+)?(/|$)", low) or "batchnorm" in low or "moments" in low or "batchnorm" in kind:
        return "batch norm"
    if "relu" in kind:
        return "relu"
    if "pool" in kind:
        return "pooling"
    if "adam" in low or kind.startswith("resourceapply") or "assign" in kind:
        return "optimizer"
    return "other"


def parse_onednn(lines: list[str]) -> dict:
    """oneDNN exec lines -> milliseconds and calls per (primitive, implementation, direction), and the ISAs seen."""
    rows: dict[tuple[str, str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for line in lines:
        if not line.startswith("onednn_verbose,") or ",exec," not in line:
            continue
        parts = line.strip().split(",")
        try:
            at = parts.index("exec")
            kind, impl, direction, ms = parts[at + 2], parts[at + 3], parts[at + 4], float(parts[-1])
        except (ValueError, IndexError):
            continue
        rows[(kind, impl, direction)][0] += ms
        rows[(kind, impl, direction)][1] += 1
    table = [
        {"primitive": k, "implementation": i, "direction": d, "ms": round(v[0], 1), "calls": v[1]}
        for (k, i, d), v in sorted(rows.items(), key=lambda kv: -kv[1][0])
    ]
    isas = sorted({i.split(":", 1)[1] for _, i, _ in rows if ":" in i})
    return {"primitives": table, "isas": isas, "total_ms": round(sum(r["ms"] for r in table), 1)}


def parse_trace(logdir: str) -> dict:
    """TensorFlow op time (ms) by category from the profiler's xplane, summed over its compute threads."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))
    if not files:
        return {}
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(files[-1]).read_bytes())
    by_category: dict[str, float] = collections.Counter()
    by_op: dict[str, float] = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                label = plane.event_metadata[event.metadata_id].name
                if ":" not in label:
                    continue
                name, op = label.rsplit(":", 1)
                category = op_category(name, op)
                if category is None:
                    continue
                ms = event.duration_ps / 1e9
                by_category[category] += ms
                by_op[op] += ms
    return {
        "ms_by_category": {c: round(by_category.get(c, 0.0), 1) for c in CATEGORIES},
        "top_ops": [{"op": op, "ms": round(ms, 1)} for op, ms in by_op.most_common(15)],
    }


def child(args) -> None:
    """One variant: build, trace, then `steps` profiled steps between markers; prints a RESULT line."""
    import numpy as np
    import tensorflow as tf

    from medcore.config import Profile
    from medcore.model import compute
    from medcore.model.training import build_model

    mode, *extras = args.variant.split("+")
    profile = Profile(name="profile", image_size=args.size, batch_size=args.batch, precision="float32")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch * args.steps, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 2, (args.batch * args.steps,)).astype("float32")
    with compute.precision_mode(mode), compute.fused_batch_norm("fused_bn" in extras):
        model = build_model(profile, 0)
        model.fit(x[: args.batch * 2], y[: args.batch * 2], batch_size=args.batch, epochs=2, verbose=0)
        logdir = tempfile.mkdtemp(prefix="medcore-profile-")
        print(f"{MARK} start", flush=True)
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        print(f"{MARK} stop", flush=True)
    trace = parse_trace(logdir)
    print("RESULT" + json.dumps({"wall_seconds": wall, "steps": args.steps, **trace}), flush=True)


def run_variant(variant: str, size: int, steps: int, batch: int) -> dict:
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if "fpmath_bf16" in variant.split("+"):
        env["ONEDNN_DEFAULT_FPMATH_MODE"] = "BF16"
    command = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--size",
        str(size),
        "--steps",
        str(steps),
        "--batch",
        str(batch),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    lines = done.stdout.splitlines()
    result = [line for line in lines if line.startswith("RESULT")]
    if done.returncode or not result:
        raise RuntimeError(f"{variant} failed ({done.returncode}): {(done.stderr or done.stdout)[-1500:]}")
    try:
        inside = lines[lines.index(f"{MARK} start") + 1 : lines.index(f"{MARK} stop")]
    except ValueError:
        inside = []
    record = json.loads(result[0][6:])
    record["onednn"] = parse_onednn(inside)
    record["images_per_second"] = batch * steps / record["wall_seconds"]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["float32", "mixed_bfloat16", "onednn_amp", "mixed_bfloat16+fused_bn", "float32+fpmath_bf16"],
    )
    parser.add_argument("--out", default="precision_profile")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.variant = args.child
        child(args)
        return 0
    results = {
        "size": args.size,
        "steps": args.steps,
        "batch": args.batch,
        "load_before": os.getloadavg(),
        "variants": {},
    }
    for variant in args.variants:
        row = run_variant(variant, args.size, args.steps, args.batch)
        results["variants"][variant] = row
        cats = row.get("ms_by_category", {})
        total = sum(cats.values()) or 1
        print(
            f"{variant}: {row['images_per_second']:.1f} img/s under the profiler; oneDNN ISAs "
            f"{', '.join(row['onednn']['isas']) or 'none'}; "
            + ", ".join(f"{c} {v / total:.0%}" for c, v in cats.items()),
            flush=True,
        )
    results["load_after"] = os.getloadavg()
    from bench.common import write_result

    print(f"raw results: {write_result(args.out, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
