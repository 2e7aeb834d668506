"""Float32 training speed where the CPU has no bf16: every option side by side, in one run (issue 33).

Usage: nice -n 10 .venv/bin/python bench/avx2_speed.py [--images 128] [--rounds 3] [--together] [--minutes 40]
       [--size 128] [--isa AVX2]

Each option is one way to run medcore's float32 training step: DenseNet121 as `medcore.model.training.build_model`
builds and compiles it, fed by `medcore.data.datasets.image_dataset` (decoded once, cached, shuffled, prefetched:
the pipeline's tf.data) from real pneumonia files, with the pipeline's class weights. Each option gets a
worker process of its own (threads, `TF_ENABLE_ONEDNN_OPTS` are a process's settings). Every worker builds
and traces its model first (the tf.data cache is filled, then a warm-up fit of two batches), then the
options train one epoch of `--images` images per round, for `--rounds` rounds or until `--minutes` have
passed: in turn (A B C A B C ...), or with `--together` all at once, so that on a machine shared with
other work every option meets the same load. An option's speed is the median of its rounds, in images
per wall second and per CPU second of its own process (every thread); with `--together` the per-CPU-second
figure is the one to compare (wall speed then depends on how the scheduler shares the cores out).

The CPU is capped with `ONEDNN_MAX_CPU_ISA` (oneDNN's kernels) and XLA's `--xla_cpu_max_isa` (its code
generator). TensorFlow's Eigen kernels are not capped by either, but this TensorFlow binary is built without
AVX2/FMA for them ("rebuild TensorFlow ... AVX2 AVX512F ... FMA" at start-up), so they run the same AVX
code on any x86-64 CPU. What stays the host's own is its microarchitecture: clock, caches, memory.
Validation, checkpoints and the CSV log are left out: they do not depend on the option.
Results: bench/results/avx2_speed.json (compact: per option its rounds, median and ratio to the baseline).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BASELINE = "shipped: fused BN, batch 32, intra 1 / inter 2"
GRID = None  # workers() or batch_workers(), set from --grid


@dataclasses.dataclass(frozen=True)
class Option:
    """One model inside a worker: its batch size, batch norm kernel and whether the step is XLA-compiled."""

    name: str
    batch: int = 32
    fused: bool = True
    jit: bool = False


@dataclasses.dataclass(frozen=True)
class Worker:
    """A process's settings (threads, environment) and the options trained in it."""

    label: str
    intra: int
    inter: int
    env: dict[str, str]
    options: tuple[Option, ...]


def batch_workers() -> list[Worker]:
    """`--grid batch`: batch size per image size, beside two copies of the shipped step (the run's own noise)."""
    return [
        Worker("shipped", 1, 2, {}, (Option(BASELINE),)),
        Worker("shipped again", 1, 2, {}, (Option("shipped again (noise)"),)),
        Worker("batch 16", 1, 2, {}, (Option("fused BN, batch 16", batch=16),)),
        Worker("batch 64", 1, 2, {}, (Option("fused BN, batch 64", batch=64),)),
    ]


def workers() -> list[Worker]:
    """The grid, one option a process. Today's night: each standard-profile task holds one `training` pool slot,
    so MEDCORE_THREADS=1, which medcore.model.compute turns into intra 1 / inter 2, with the fused batch norm on (the
    profile's default)."""
    return [
        Worker("shipped", 1, 2, {}, (Option(BASELINE),)),
        Worker("fused off", 1, 2, {}, (Option("Keras batch norm (fused off), batch 32", fused=False),)),
        Worker("batch 64", 1, 2, {}, (Option("fused BN, batch 64", batch=64),)),
        Worker("XLA", 1, 2, {}, (Option("XLA jit_compile, fused BN, batch 32", jit=True),)),
        Worker("both cores", 2, 2, {}, (Option("fused BN, batch 32, intra 2 / inter 2 (one task, both cores)"),)),
        Worker(
            "oneDNN off",
            1,
            2,
            {"TF_ENABLE_ONEDNN_OPTS": "0"},
            (Option("TF_ENABLE_ONEDNN_OPTS=0 (Eigen), fused BN, batch 32"),),
        ),
    ]


def pneumonia_files(data_root: Path, images: int, seed: int = 0) -> tuple[list[str], list[float]]:
    """`images` training files of the real pneumonia set, both classes in their own proportion."""
    import numpy as np

    rows = [
        (str(p), float(label == "PNEUMONIA"))
        for label in ("NORMAL", "PNEUMONIA")
        for p in sorted((data_root / "pneumonia" / "train" / label).iterdir())
    ]
    picked = np.random.default_rng(seed).choice(len(rows), size=min(images, len(rows)), replace=False)
    return [rows[i][0] for i in picked], [rows[i][1] for i in picked]


def _build_option(profile, option: Option, paths: list[str], labels_array, weights, size: int):
    """Build one option's model, cache its data and trace its step: model, data, trace seconds, jit applied."""
    import keras
    import numpy as np

    from medcore.data.datasets import image_dataset
    from medcore.model import compute
    from medcore.model.training import build_model

    start = time.perf_counter()
    with compute.precision_mode("float32"), compute.fused_batch_norm(option.fused):
        keras.utils.set_random_seed(0)
        model = build_model(dataclasses.replace(profile, batch_size=option.batch), 0)
        if option.jit:  # the shipped compile (loss, Adam, AUC and accuracy metrics) with an XLA step
            model.compile(
                optimizer=keras.optimizers.Adam(profile.learning_rate),
                loss=keras.losses.BinaryCrossentropy(from_logits=True),
                metrics=[
                    keras.metrics.AUC(from_logits=True, name="auc"),
                    keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
                ],
                jit_compile=True,
            )
        data = image_dataset(np.array(paths), labels_array, size, option.batch, training=True, seed=0)
        for _ in data:  # decode once into the cache, as the pipeline's first epoch does
            pass
        # Trace on two batches of the same shape (the step is traced once per input shape).
        warm = image_dataset(
            np.array(paths[: 2 * option.batch]),
            labels_array[: 2 * option.batch],
            size,
            option.batch,
            training=True,
            seed=0,
        )
        model.fit(warm, epochs=1, verbose=0, class_weight=weights)
    # Keras turns jit_compile off, silently, when a layer does not support XLA (RandomZoom does not).
    return model, data, time.perf_counter() - start, bool(model.jit_compile)


def _serve(options: dict[str, Option], models: dict, data: dict, weights) -> None:
    """Train one epoch of each option named on stdin, printing its RESULT line."""
    from medcore.model import compute

    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        option = options[name]
        with compute.precision_mode("float32"), compute.fused_batch_norm(option.fused):
            wall, cpu = time.perf_counter(), time.process_time()
            history = models[name].fit(data[name], epochs=1, verbose=0, class_weight=weights)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print("RESULT" + json.dumps({"wall": wall, "cpu": cpu, "loss": history.history["loss"][-1]}), flush=True)


def _worker_main(args) -> None:
    """Subprocess mode: build and trace the worker's options, then train one epoch of the one named on stdin."""
    import numpy as np

    from medcore.config import load_config
    from medcore.model import compute
    from medcore.model.training import class_weights

    spec = json.loads(args.worker)
    threads = compute.configure_threads(spec["intra"], spec["inter"])
    profile = dataclasses.replace(
        load_config(ROOT / "conditions.yaml").profiles["standard"], image_size=args.size, precision="float32"
    )
    paths, labels = pneumonia_files(Path(args.data_root), args.images)
    labels_array = np.array(labels, np.float32)
    weights = class_weights(labels_array)
    models: dict[str, Any] = {}
    data: dict[str, Any] = {}
    options = {o["name"]: Option(**o) for o in spec["options"]}
    trace: dict[str, float] = {}
    jit: dict[str, bool] = {}
    for name, option in options.items():
        models[name], data[name], trace[name], jit[name] = _build_option(
            profile, option, paths, labels_array, weights, args.size
        )
    print("READY" + json.dumps({"trace_seconds": trace, "threads": threads, "jit_compile": jit}), flush=True)
    _serve(options, models, data, weights)


def _read(proc: subprocess.Popen, prefix: str) -> dict:
    for line in proc.stdout:
        if line.startswith(prefix):
            return json.loads(line[len(prefix) :])
    raise RuntimeError(f"worker {proc.pid} ended before {prefix} (exit {proc.wait()})")


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def _start_workers(args, procs: dict[str, subprocess.Popen], logs: dict) -> None:
    """Start every worker process (they trace at once), its stderr to a temporary file."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": args.isa, "XLA_FLAGS": f"--xla_cpu_max_isa={args.isa}"}
    for worker in GRID():
        spec = {
            "intra": worker.intra,
            "inter": worker.inter,
            "options": [dataclasses.asdict(o) for o in worker.options],
        }
        logs[worker.label] = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 closed in _stop_workers
        procs[worker.label] = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                json.dumps(spec),
                "--images",
                str(args.images),
                "--size",
                str(args.size),
                "--data-root",
                args.data_root,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=logs[worker.label],
            text=True,
            env={**env, **worker.env},
        )
        if args.stagger:
            time.sleep(args.stagger)


def _option_row(worker, option: Option, ready: dict) -> dict:
    return {
        "worker": worker.label,
        "intra_op": worker.intra,
        "inter_op": worker.inter,
        "env": worker.env,
        "batch": option.batch,
        "fused_batch_norm": option.fused,
        "jit_compile": option.jit,
        "jit_compile_applied": ready["jit_compile"][option.name],
        "threads_applied": ready["threads"],
        "trace_seconds": ready["trace_seconds"][option.name],
        "rounds": [],
    }


def _await_ready(procs: dict, logs: dict, rows: dict[str, dict], failed: dict[str, str]) -> None:
    """Wait for each worker's READY line: a row per option, or the worker's failure."""
    for worker in GRID():
        try:
            ready = _read(procs[worker.label], "READY")
        except RuntimeError as exc:
            logs[worker.label].seek(0)
            failed[worker.label] = f"{exc}: {logs[worker.label].read()[-400:]}"
            print(f"{worker.label}: failed", failed[worker.label], flush=True)
            continue
        print(f"{worker.label}: traced {ready['trace_seconds']}", flush=True)
        for option in worker.options:
            rows[option.name] = _option_row(worker, option, ready)


def _rounds(args, procs: dict, rows: dict[str, dict], failed: dict[str, str], started: float) -> None:
    """Give each working option one epoch per round, until --rounds or --minutes."""
    active = [w for w in GRID() if w.label not in failed]
    for r in range(args.rounds):
        if r and time.perf_counter() - started > args.minutes * 60:
            break  # out of time: every option has the same number of rounds
        # --together: every worker trains at once (same load for all, measured per CPU-second);
        # otherwise one option at a time, in turn.
        batches = [active] if args.together else [[w] for w in active]
        for batch in batches:
            for worker in batch:
                procs[worker.label].stdin.write("".join(o.name + "\n" for o in worker.options))
                procs[worker.label].stdin.flush()
            for worker in batch:
                for option in worker.options:
                    got = _read(procs[worker.label], "RESULT")
                    rows[option.name]["rounds"].append(got)
                    print(
                        f"round {r + 1} {option.name}: {args.images / got['wall']:.2f} img/s, "
                        f"{args.images / got['cpu']:.2f} img/CPU-s",
                        flush=True,
                    )


def _stop_workers(procs: dict[str, subprocess.Popen], logs: dict) -> None:
    for label, proc in procs.items():
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs[label].seek(0)
        tail = logs[label].read()[-600:]
        if proc.returncode:
            print(f"{label} exited {proc.returncode}: {tail}", file=sys.stderr)
        logs[label].close()


def run(args) -> dict:
    """Start every worker (they trace at once), then give each option one epoch per round, in turn."""
    procs: dict[str, subprocess.Popen] = {}
    logs: dict = {}
    started = time.perf_counter()
    rows: dict[str, dict] = {}
    failed: dict[str, str] = {}
    try:
        _start_workers(args, procs, logs)
        _await_ready(procs, logs, rows, failed)
        load_before = load_average()
        _rounds(args, procs, rows, failed, started)
        load_after = load_average()
    finally:
        _stop_workers(procs, logs)
    result = summarise(rows, args, load_before, load_after, time.perf_counter() - started)
    result["failed"] = failed
    return result


def summarise(rows: dict[str, dict], args, load_before, load_after, seconds: float) -> dict:
    """Per option: median img/s (wall and per CPU-second) over its rounds, min-max, and the ratio to the baseline."""
    out = {}
    for name, row in rows.items():
        rounds = row["rounds"]
        per_wall = [args.images / r["wall"] for r in rounds]
        per_cpu = [args.images / r["cpu"] for r in rounds]
        out[name] = {
            **{k: v for k, v in row.items() if k != "rounds"},
            "images_per_second": round(statistics.median(per_wall), 3),
            "images_per_second_rounds": [round(v, 3) for v in per_wall],
            "images_per_cpu_second": round(statistics.median(per_cpu), 3),
            "images_per_cpu_second_rounds": [round(v, 3) for v in per_cpu],
            "last_loss": round(rounds[-1]["loss"], 4),
        }
    base = out[BASELINE]
    for row in out.values():
        row["ratio"] = round(row["images_per_second"] / base["images_per_second"], 3)
        row["ratio_per_cpu_second"] = round(row["images_per_cpu_second"] / base["images_per_cpu_second"], 3)
        # Pair each round with the baseline's same round: the spread of the ratio under the same load.
        row["ratio_rounds"] = [
            round(a / b, 3) for a, b in zip(row["images_per_second_rounds"], base["images_per_second_rounds"])
        ]
    return {
        "command": "bench/avx2_speed.py " + " ".join(sys.argv[1:]),
        "emulation": (
            f"ONEDNN_MAX_CPU_ISA={args.isa} and XLA_FLAGS=--xla_cpu_max_isa={args.isa}; TensorFlow's Eigen "
            "kernels are not capped but are built for AVX only (no AVX2/FMA/AVX-512) in this binary"
        )
        if args.isa
        else "none",
        "image_size": args.size,
        "images_per_round": args.images,
        "rounds": args.rounds,
        "rounds_done": min((len(r["rounds"]) for r in rows.values()), default=0),
        "together": args.together,
        "grid": args.grid,
        "baseline": BASELINE,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "seconds": round(seconds, 1),
        "options": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128, help="training images per round (a multiple of 64)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--isa", default="AVX2", help="ONEDNN_MAX_CPU_ISA and --xla_cpu_max_isa ('' for none)")
    parser.add_argument("--stagger", type=float, default=0.0, help="seconds between worker starts")
    parser.add_argument("--out", default="avx2_speed")
    parser.add_argument("--grid", choices=["all", "batch"], default="all", help="which options (see batch_workers)")
    parser.add_argument("--together", action="store_true", help="every option trains at once in each round")
    parser.add_argument("--minutes", type=float, default=40, help="start no round after this many minutes")
    parser.add_argument(
        "--data-root", default=os.environ.get("MEDCORE_DATA_ROOT") or str(ROOT.parent / "shared" / "datasets")
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global GRID
    GRID = batch_workers if args.grid == "batch" else workers
    if args.worker:
        _worker_main(args)
        return
    from common import write_result

    print(write_result(args.out, run(args)))


if __name__ == "__main__":
    main()
