"""bench/train_throughput.py --pairs: the pipeline against a plain fit in pairs of fresh processes, each epoch's
wall and CPU seconds, and the pairs' summary."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.train_common import PAIR_IMAGES, ROOT, _result, _spawn, _split, _tensors, in_memory, pipeline_fit, steady

# oneDNN keeps this many compiled primitives per process (1024 when unset); `--primitive-cache` sets it.
CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
SIDES = ("pipeline", "plain")


def shipped_sizes() -> list[int]:
    """The image sizes of the profiles conditions.yaml ships (what issue 16's target is judged at)."""
    from medcore.config import load_config

    return sorted({p.image_size for p in load_config(ROOT / "conditions.yaml").profiles.values()})


def _epoch_timer():
    """A Keras callback stamping each epoch's start, its validation's start and end, and its own on_epoch_end.

    It has no batch hooks, so it leaves Keras' batch dispatch (async or not) as the other callbacks set it.
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.stamps: list[dict[str, float]] = []
            self.finished: dict[str, Any] = {}

        def on_epoch_begin(self, epoch, logs=None):
            self.stamps.append({"begin": time.perf_counter(), **cpu_stamp()})

        def on_test_begin(self, logs=None):
            if self.stamps:
                self.stamps[-1]["test_begin"] = time.perf_counter()

        def on_test_end(self, logs=None):
            if self.stamps:
                self.stamps[-1]["test_end"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.stamps[-1]["end"] = time.perf_counter()

        def on_train_end(self, logs=None):
            # The last epoch's CPU ends here, after every callback's on_epoch_end (checkpoints included).
            self.finished = {"end": time.perf_counter(), **cpu_stamp()}

    return EpochTimer()


def cpu_stamp() -> dict[str, Any]:
    """This process's CPU seconds (every thread) and the machine's /proc/stat jiffies, at this moment.

    The kernel here accounts steal time (CONFIG_PARAVIRT_TIME_ACCOUNTING), so time the host takes from a
    vCPU is in `steal` and not in the process's CPU seconds.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return {"cpu": time.process_time(), "jiffies": fields[:8]}


def epoch_cpu(stamps: list[dict[str, Any]], finished: dict[str, Any]) -> dict[str, list]:
    """Per epoch, from one epoch's start to the next's (the last to train end), callbacks included:

    the process's CPU seconds, and the machine's idle and steal shares of all CPU time in that span.
    Epochs without CPU stamps (older results) give nothing.
    """
    marks = [s for s in stamps if "cpu" in s] + ([finished] if finished.get("cpu") is not None else [])
    out: dict[str, list] = {"cpu_seconds": [], "machine_idle": [], "machine_steal": []}
    for a, b in zip(marks, marks[1:]):
        d = [y - x for x, y in zip(a["jiffies"], b["jiffies"])]
        total = sum(d) or 1
        out["cpu_seconds"].append(b["cpu"] - a["cpu"])
        out["machine_idle"].append((d[3] + d[4]) / total)
        out["machine_steal"].append(d[7] / total)
    return out


def epoch_parts(stamps: list[dict[str, float]], epoch_seconds: list[float] | None = None) -> dict[str, list]:
    """Per epoch: train steps (start to validation), validation, and what ran after the timer's on_epoch_end.

    With `epoch_seconds` (the pipeline's own clock, which stops after its checkpointing callbacks), the
    callbacks' share is that clock minus the timer's span; without it the epoch ends at the timer.
    """
    parts: dict[str, list] = {"train_seconds": [], "validation_seconds": [], "callbacks_seconds": []}
    for i, stamp in enumerate(stamps):
        test_begin = stamp.get("test_begin", stamp["end"])
        parts["train_seconds"].append(test_begin - stamp["begin"])
        parts["validation_seconds"].append(stamp.get("test_end", test_begin) - test_begin)
        span = stamp["end"] - stamp["begin"]
        parts["callbacks_seconds"].append(
            max(epoch_seconds[i] - span, 0.0) if epoch_seconds and i < len(epoch_seconds) else None
        )
    return parts


@contextlib.contextmanager
def _timed_pipeline() -> Iterator[Any]:
    """Put an epoch timer among train_model's callbacks, just before its CSV log and checkpoints, and yield it.

    It rides along with the learning-rate schedule, the first of train_model's callbacks that do no work
    at an epoch's end; the pipeline's own clock (ProgressLog) stops after the checkpoints, so the gap
    between the two is what the epoch-end callbacks cost. Nothing else about the pipeline changes.
    """
    from medcore.model import training

    timer = _epoch_timer()
    schedule = training._schedule_callbacks
    training._schedule_callbacks = lambda *a, **k: [timer, *schedule(*a, **k)]
    try:
        yield timer
    finally:
        training._schedule_callbacks = schedule


def plain_fit(config, profile, split, epochs: int, mode: str, fused: bool) -> dict:
    """One plain `model.fit` of `epochs` epochs on in-memory tensors: the pipeline's model, batch and images."""
    import keras

    from medcore.model import compute
    from medcore.model.training import build_model, configure_threads

    threads = configure_threads(profile)  # the same pools train_model would set up
    x, y = _tensors(split[split["split"] == "train"], profile)
    vx, vy = _tensors(split[split["split"] == "val"], profile)
    timer = _epoch_timer()
    with compute.precision_mode(mode), compute.fused_batch_norm(fused):
        keras.utils.set_random_seed(config.seed)
        model = build_model(profile, config.seed)
        model.fit(
            in_memory(x, y, profile.batch_size, shuffle=True, seed=config.seed),
            epochs=epochs,
            verbose=0,
            validation_data=in_memory(vx, vy, profile.batch_size, shuffle=False),
            callbacks=[timer],
        )
    seconds = [s["end"] - s["begin"] for s in timer.stamps]
    parts = epoch_parts(timer.stamps)
    parts.pop("callbacks_seconds")  # plain fit has none
    parts.update(epoch_cpu(timer.stamps, timer.finished))
    return {
        "mode": mode,
        "fused_batch_norm": fused,
        "threads": threads,
        "epoch_seconds": seconds,
        "images": len(x),
        **parts,
        **steady(seconds, len(x), skip=1),
    }


def _fingerprint(split) -> str:
    """A short hash of which files are in which split, so both runs of a pair can be shown to share images."""
    import hashlib

    rows = sorted(f"{s}\t{p}" for s, p in zip(split["split"], split["path"]))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def _pair_worker(args) -> None:
    """Subprocess mode: one side of a pair (the pipeline or the plain fit), printing its record as JSON."""
    import resource

    started, began = time.perf_counter(), time.time()
    with tempfile.TemporaryDirectory() as tmp:
        config, profile, split = _split(Path(args.data_root), args.images, args.size, Path(tmp), args.execution)
        if args.pair_worker == "pipeline":
            with _timed_pipeline() as timer:
                row = pipeline_fit(config, profile, split, args.pair_epochs, Path(tmp), args.mode, args.fused)
            row.update(epoch_parts(timer.stamps, row["epoch_seconds"]))
            row.update(epoch_cpu(timer.stamps, timer.finished))
        else:
            row = plain_fit(config, profile, split, args.pair_epochs, args.mode, args.fused)
    row.update(
        side=args.pair_worker,
        pid=os.getpid(),
        split=_fingerprint(split),
        val_images=int((split["split"] == "val").sum()),
        first_epoch_seconds=row["epoch_seconds"][0],
        primitive_cache_capacity=os.environ.get(CACHE_ENV),
        process_seconds=time.perf_counter() - started,
        # Wall-clock life of the worker, so runs of one pair can be shown to have overlapped (or not).
        lived=[began, time.time()],
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    print("RESULT" + json.dumps(row))


def _median_of(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise_pairs(pairs: list[dict]) -> dict:
    """Per size: the median pair ratio with the min-max of the pair ratios, each side's speed, the epoch split."""
    ratios = [p["ratio"] for p in pairs]

    def side(name: str) -> dict:
        rates = [p[name]["images_per_second"] for p in pairs]
        row = {"images_per_second": statistics.median(rates), "min": min(rates), "max": max(rates)}
        per_cpu = [
            p[name]["images"] / cpu for p in pairs if (cpu := _median_of((p[name].get("cpu_seconds") or [])[1:]))
        ]
        if per_cpu:
            row["images_per_cpu_second"] = statistics.median(per_cpu)
        return row

    def parts(name: str) -> dict:
        # Steady epochs only: the first one of every run holds the trace.
        keys = ("epoch_seconds", "train_seconds", "validation_seconds", "callbacks_seconds", "cpu_seconds")
        keys += ("machine_idle", "machine_steal")
        return {k: _median_of([v for p in pairs for v in (p[name].get(k) or [])[1:]]) for k in keys}

    return {
        "pairs": pairs,
        "n_pairs": len(pairs),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "train_ratio": _median_of([p.get("train_ratio") for p in pairs]),
        "train_ratio_min": min((p["train_ratio"] for p in pairs if p.get("train_ratio")), default=None),
        "train_ratio_max": max((p["train_ratio"] for p in pairs if p.get("train_ratio")), default=None),
        "cpu_ratio": _median_of([p.get("cpu_ratio") for p in pairs]),
        "cpu_ratio_min": min((p["cpu_ratio"] for p in pairs if p.get("cpu_ratio")), default=None),
        "cpu_ratio_max": max((p["cpu_ratio"] for p in pairs if p.get("cpu_ratio")), default=None),
        # Drift within a pair would make these two differ; alternating the order cancels it in the median.
        "ratio_by_order": {
            f"{first} first": _median_of([p["ratio"] for p in pairs if p["order"][0] == first]) for first in SIDES
        },
        "pipeline": side("pipeline"),
        "plain": side("plain"),
        "epoch_parts": {name: parts(name) for name in SIDES},
    }


def run_pair(
    order: tuple[str, ...], arguments: list[str], env: dict[str, str], started: float, together: bool = False
) -> dict:
    """One pair: each side in a fresh worker process, one after the other in `order`; their ratio.

    `together` starts both at once instead, as a night runs two one-slot trainings side by side, so each
    side shares the machine with the other for the whole pair.
    """
    pair: dict = {"order": list(order), "together": together}
    if together:
        load, at = os.getloadavg(), time.perf_counter() - started
        workers = {name: _spawn(["--pair-worker", name, *arguments], env) for name in order}
        try:
            for name, worker in workers.items():
                pair[name] = {**_result(worker), "load_before": load, "started_at_seconds": at}
        finally:
            for worker in workers.values():  # one side failed: do not leave the other training
                if worker.proc.poll() is None:
                    worker.proc.kill()
    else:
        for name in order:
            load, at = os.getloadavg(), time.perf_counter() - started
            pair[name] = {**_result(_spawn(["--pair-worker", name, *arguments], env)), "load_before": load}
            pair[name]["started_at_seconds"] = at
    pair["ratio"] = pair["pipeline"]["images_per_second"] / pair["plain"]["images_per_second"]
    # The same over the train steps alone (same images both sides): the pipeline's cost per image, without
    # its fixed per-epoch checkpoints, whose share shrinks as a night's epochs hold more images than these.
    steps = {name: _median_of(pair[name]["train_seconds"][1:]) for name in SIDES}
    pair["train_ratio"] = steps["plain"] / steps["pipeline"] if all(steps.values()) else None
    # The same per CPU-second of each process: time the host or the scheduler kept a side off the CPU
    # does not count, time either side spent computing (its tf.data threads included) does.
    cpu = {name: _median_of((pair[name].get("cpu_seconds") or [])[1:]) for name in SIDES}
    pair["cpu_ratio"] = cpu["plain"] / cpu["pipeline"] if all(cpu.values()) else None
    return pair


def _pair_env(args) -> dict:
    """The environment of every paired run: this one's, with the primitive cache and thread count asked for."""
    env = dict(os.environ)
    if args.primitive_cache is not None:
        env[CACHE_ENV] = str(args.primitive_cache)
    if args.pair_threads is not None:
        # What the DAG does for a task holding this many `training` pool slots (medcore.airflow_adapter).
        env["MEDCORE_THREADS"] = str(args.pair_threads)
    return env


def _print_pair(size: int, i: int, total: int, pair: dict) -> None:
    print(
        f"{size}px pair {i + 1}/{total} ({' then '.join(pair['order'])}): pipeline "
        f"{pair['pipeline']['images_per_second']:.1f} img/s, plain {pair['plain']['images_per_second']:.1f}"
        f" img/s, ratio {pair['ratio']:.3f}"
        + (f", per CPU-second {pair['cpu_ratio']:.3f}" if pair.get("cpu_ratio") else ""),
        flush=True,
    )


def _size_pairs(args, size: int, tmp: Path, choice: dict, env: dict, started: float) -> dict:
    """--pairs pairs at one size, alternating order; their summary row."""
    images = args.images or PAIR_IMAGES
    config, profile, split = _split(Path(args.data_root), images, size, tmp, args.execution)
    fused = profile.fused_batch_norm if args.pair_fused is None else args.pair_fused
    fused_flag = ["--fused"] if fused else []
    common = ["--size", str(size), "--images", str(images), "--data-root", str(config.data_root)]
    common += ["--mode", choice["mode"], "--pair-epochs", str(args.pair_epochs), *fused_flag]
    common += ["--execution", args.execution]
    pairs = []
    for i in range(args.pairs):
        pair = run_pair(SIDES if i % 2 == 0 else SIDES[::-1], common, env, started, args.pair_together)
        if {pair[name]["split"] for name in SIDES} != {_fingerprint(split)}:
            raise RuntimeError(f"{size} px pair {i + 1}: the two runs did not train on the same images")
        pairs.append(pair)
        _print_pair(size, i, args.pairs, pair)
    row = {"images": images, "mode": choice["mode"], "fused_batch_norm": fused, **summarise_pairs(pairs)}
    print(
        f"{size}px: pipeline / plain {row['ratio']:.3f} (pairs {row['ratio_min']:.3f}-{row['ratio_max']:.3f},"
        f" {len(pairs)} pairs)",
        flush=True,
    )
    return row


def paired(args) -> dict:
    """--pairs: pipeline / plain in pairs of fresh processes, alternating order, per size; returns the results."""
    from bench.common import write_result
    from medcore.model import compute

    choice = compute.choose_precision(args.pair_mode)
    env = _pair_env(args)
    shipped = shipped_sizes()
    results: dict = {
        "command": "bench/train_throughput.py " + " ".join(args.argv),
        "pairs": args.pairs,
        "epochs": args.pair_epochs,
        "execution": args.execution,
        "precision": choice,
        # None: unset, so oneDNN's default capacity (1024 primitives) applies in every run.
        "primitive_cache_capacity": env.get(CACHE_ENV),
        # None: TensorFlow's default pools (every core); the night's one-slot tasks run with 1.
        "threads": int(env["MEDCORE_THREADS"]) if env.get("MEDCORE_THREADS") else None,
        "inter_threads": int(env["MEDCORE_INTER_THREADS"]) if env.get("MEDCORE_INTER_THREADS") else None,
        "together": args.pair_together,
        "shipped_sizes": shipped,
        "load_before": os.getloadavg(),
        "sizes": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.pair_sizes or shipped:
            results["sizes"][size] = _size_pairs(args, size, Path(tmp), choice, env, started)
    results["load_after"] = os.getloadavg()
    results["wall_seconds"] = time.perf_counter() - started
    print(f"raw results: {write_result(args.out, results)}")
    return results
