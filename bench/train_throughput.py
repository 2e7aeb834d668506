"""Training throughput: medcore's pipeline against a plain `model.fit`, precisions, threads, decoding.

Usage: .venv/bin/python bench/train_throughput.py [--sizes 64 128 224] [--rounds 4] [--thread-sizes 64 96]
       .venv/bin/python bench/train_throughput.py --pairs 5 [--pair-sizes 128 160] [--primitive-cache N]
                                                   [--pair-threads 1 --pair-together]

This machine is shared and noisy, so everything that is compared is measured in one run, and the
plain-fit variants are measured side by side: every variant's model is built and traced first,
then the variants take turns, one epoch each, for `--rounds` rounds. Each variant's speed is the
median of its steady epochs (all after tracing), with the spread (min-max) stated beside it.

For each image size it records
  - decode: reading, decoding and resizing the training files once (tf.data, no training)
  - pipeline: `medcore.model.training.train_model` (tf.data from files, callbacks, checkpoints, validation),
    in float32 with TensorFlow's default threads (today's settings) and in each `--pipeline-modes` mode
  - plain: `model.fit` on the same images as in-memory tensors, same model and batch, for each
    precision in `--modes` (float32, mixed_bfloat16, onednn_amp), each also with the fused batch norm
    (`medcore.model.compute.fused_batch_norm`) unless --no-fused
  - the share of the CPU's matmul peak each speed reaches (bench/results/peak.json, bench/peak.py)
  - for `--thread-sizes`: intra x inter-op settings in one process, and two processes at once
    (tasks x threads), each a plain float32 fit in a subprocess, run one after another
The load average before and after is recorded; raw figures go to bench/results/train_throughput.json.

`--pairs N` measures only the pipeline / plain ratio, in pairs of fresh processes (issue 16's standard:
side by side, with a spread smaller than the margin to 0.95). For each `--pair-sizes` size it runs N
pairs; a pair is one pipeline run (`train_model`) and one plain run (one `model.fit` of --pair-epochs
epochs on in-memory tensors) of the same model, precision, batch, images and epochs, each in a process
of its own so no oneDNN primitive cache, graph or allocator state carries over from another model. The
order alternates (pipeline first, then plain first, ...) so drift between the two halves of a pair cancels
over the pairs. Each run trains on 1,024 images per epoch (--images), about a night's smallest epoch.
Each run's speed is the median of its epochs after the first (the trace); each pair's
ratio is pipeline / plain of its two runs; the result is the median ratio with the min-max of the pair
ratios. Both sides time an epoch the same way (from its start to the end of its callbacks) and split it
into train steps, validation and, for the pipeline, its epoch-end callbacks (CSV log, best-epoch weights,
BackupAndRestore's checkpoint). `--primitive-cache N` sets ONEDNN_PRIMITIVE_CACHE_CAPACITY in every run.
Results go to bench/results/train_pairs.json (`--out` to name another, e.g. for a second cache size).
Data: the real pneumonia set under $MEDCORE_DATA_ROOT (default ../shared/datasets), else phantoms.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Train images per epoch at each size: enough steps (>= 3 batches of 32) for an epoch of several seconds.
DEFAULT_IMAGES = {64: 512, 96: 384, 128: 256, 160: 192, 224: 128}
# --pairs: train images per epoch at every size, about the smallest set's (limb, ~1,100) epoch in a night.
# The pipeline's epoch-end checkpoints cost the same whatever an epoch holds, so an epoch of a few hundred
# images would charge them to the pipeline several times over what a night pays; this charges at most that.
PAIR_IMAGES = 1024
# (label, intra-op, inter-op, processes): one task on both cores, or two tasks side by side.
THREAD_GRID = (
    ("1 task, intra 2 / inter 2", 2, 2, 1),
    ("1 task, intra 2 / inter 1", 2, 1, 1),
    ("2 tasks, intra 1 / inter 1 each", 1, 1, 2),
    ("2 tasks, intra 1 / inter 2 each", 1, 2, 2),
)


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


def decode_rate(frame, size: int) -> dict:
    """Images/s of reading, decoding and resizing the files once, as the pipeline's first epoch does."""
    import numpy as np

    from medcore.data.datasets import image_dataset

    paths = frame["path"].to_numpy(dtype=str)
    data = image_dataset(paths, np.zeros(len(paths), np.float32), size, 32, training=False, seed=0)
    start = time.perf_counter()
    for _ in data:
        pass
    took = time.perf_counter() - start
    return {"images": len(paths), "seconds": took, "images_per_second": len(paths) / took}


def variant_name(mode: str, fused: bool) -> str:
    return f"{mode}+fused_bn" if fused else mode


def plain_variants(config, profile, split, variants: list[str], rounds: int) -> dict:
    """Plain `model.fit` on in-memory tensors for every (precision, fused batch norm) variant, taking turns.

    Each model is built and traced (two short fits) under its own settings first; then every round
    gives each variant one epoch, so all of them meet the same machine load.
    """
    import keras

    from medcore.model import compute
    from medcore.model.training import build_model

    x, y = _tensors(split[split["split"] == "train"], profile)
    vx, vy = _tensors(split[split["split"] == "val"], profile)
    train_data = in_memory(x, y, profile.batch_size, shuffle=True, seed=config.seed)
    val_data = in_memory(vx, vy, profile.batch_size, shuffle=False)
    models, out = {}, {}
    for name in variants:
        mode, fused = name.split("+")[0], name.endswith("+fused_bn")
        start = time.perf_counter()
        with compute.precision_mode(mode), compute.fused_batch_norm(fused):
            keras.utils.set_random_seed(config.seed)
            model = build_model(profile, config.seed)
            # Traced while the mode applies (the oneDNN rewrite is applied when the step is first traced).
            warm = in_memory(x[:64], y[:64], profile.batch_size, shuffle=False)
            model.fit(warm, epochs=1, verbose=0, validation_data=val_data)
            model.fit(warm, epochs=1, verbose=0, validation_data=val_data)
        models[name] = model
        out[name] = {
            "mode": mode,
            "fused_batch_norm": fused,
            "trace_seconds": time.perf_counter() - start,
            "epoch_seconds": [],
            "images": len(x),
        }
        print(f"  traced {name} in {out[name]['trace_seconds']:.0f}s", flush=True)
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            # Under its own settings again, in case Keras traces the step anew for the full-size epoch.
            with compute.precision_mode(out[name]["mode"]), compute.fused_batch_norm(out[name]["fused_batch_norm"]):
                model.fit(train_data, epochs=1, verbose=0, validation_data=val_data)
            out[name]["epoch_seconds"].append(time.perf_counter() - start)
    for name, row in out.items():
        row.update(steady(row["epoch_seconds"], len(x), skip=0))
        row["final_loss"] = float(models[name].evaluate(x, y, verbose=0, batch_size=profile.batch_size)[0])
    return out


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


def _worker(args) -> None:
    """Subprocess mode: a plain float32 fit with fixed thread pools, printing its steady images/s as JSON."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    with tempfile.TemporaryDirectory() as tmp:
        config, profile, split = _split(Path(args.data_root), args.images, args.size, Path(tmp))
        result = plain_variants(config, profile, split, [variant_name(args.mode, args.fused)], args.rounds)
    print("RESULT" + json.dumps(next(iter(result.values()))))


@dataclasses.dataclass
class Worker:
    """This script running again as a worker process, with the file its stderr goes to."""

    proc: subprocess.Popen
    log: Any


def _spawn(arguments: list[str], env: dict[str, str] | None = None) -> Worker:
    """Start a worker; its stderr goes to a file, since a full pipe would stall it mid-measurement."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 closed by _result once the worker is done
    proc = subprocess.Popen(
        [sys.executable, __file__, *arguments], stdout=subprocess.PIPE, stderr=log, text=True, env=env
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


def concurrent(args, size: int, intra: int, inter: int, processes: int, images: int) -> dict:
    """`processes` plain fits at once with the given pools; their summed steady images/s."""
    command = [
        "--worker",
        "--intra",
        str(intra),
        "--inter",
        str(inter),
        "--size",
        str(size),
        "--images",
        str(images),
        "--rounds",
        str(args.rounds),
        "--data-root",
        args.data_root,
        "--mode",
        args.thread_mode,
    ] + (["--fused"] if args.thread_fused else [])
    workers = [_spawn(command) for _ in range(processes)]
    rows = [_result(worker) for worker in workers]
    return {
        "intra_op": intra,
        "inter_op": inter,
        "processes": processes,
        "per_process": rows,
        "images_per_second": sum(r["images_per_second"] for r in rows),
    }


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


def paired(args) -> dict:
    """--pairs: pipeline / plain in pairs of fresh processes, alternating order, per size; returns the results."""
    from bench.common import write_result
    from medcore.model import compute

    choice = compute.choose_precision(args.pair_mode)
    env = dict(os.environ)
    if args.primitive_cache is not None:
        env[CACHE_ENV] = str(args.primitive_cache)
    if args.pair_threads is not None:
        # What the DAG does for a task holding this many `training` pool slots (medcore.airflow_adapter).
        env["MEDCORE_THREADS"] = str(args.pair_threads)
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
            images = args.images or PAIR_IMAGES
            config, profile, split = _split(Path(args.data_root), images, size, Path(tmp), args.execution)
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
                print(
                    f"{size}px pair {i + 1}/{args.pairs} ({' then '.join(pair['order'])}): pipeline "
                    f"{pair['pipeline']['images_per_second']:.1f} img/s, plain {pair['plain']['images_per_second']:.1f}"
                    f" img/s, ratio {pair['ratio']:.3f}"
                    + (f", per CPU-second {pair['cpu_ratio']:.3f}" if pair.get("cpu_ratio") else ""),
                    flush=True,
                )
            row = {"images": images, "mode": choice["mode"], "fused_batch_norm": fused, **summarise_pairs(pairs)}
            results["sizes"][size] = row
            print(
                f"{size}px: pipeline / plain {row['ratio']:.3f} (pairs {row['ratio_min']:.3f}-{row['ratio_max']:.3f},"
                f" {len(pairs)} pairs)",
                flush=True,
            )
    results["load_after"] = os.getloadavg()
    results["wall_seconds"] = time.perf_counter() - started
    print(f"raw results: {write_result(args.out, results)}")
    return results


def merge(names: list[str], out: str) -> None:
    """One results file from several runs of this script (each measured its sizes in one process)."""
    from bench.common import RESULTS, write_result

    parts = [json.loads((RESULTS / f"{name}.json").read_text()) for name in names]
    merged = {k: v for k, v in parts[0].items() if k not in ("benchmark", "machine", "versions", "sizes")}
    merged["sizes"] = {
        size: {**row, "run": name} for name, part in zip(names, parts) for size, row in part["sizes"].items()
    }
    merged["load_before"], merged["load_after"] = parts[0]["load_before"], parts[-1]["load_after"]
    merged["runs"] = {
        name: {
            "date": part["machine"]["date"],
            "load_before": part["load_before"],
            "load_after": part["load_after"],
            "wall_seconds": part.get("wall_seconds"),
        }
        for name, part in zip(names, parts)
    }
    print(f"merged into {write_result(out, merged)}")


def main(argv: list[str] | None = None) -> None:
    from medcore.model.compute import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument(
        "--images", type=int, default=None, help=f"train images per epoch (default: by size; --pairs: {PAIR_IMAGES})"
    )
    parser.add_argument("--rounds", type=int, default=4, help="steady epochs per plain variant")
    parser.add_argument("--modes", nargs="+", default=["float32", "mixed_bfloat16", "onednn_amp"])
    parser.add_argument("--no-fused", action="store_true", help="skip the fused batch norm variants")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=None,
        help="plain-fit variants to measure instead of "
        "--modes x fused (e.g. float32 mixed_bfloat16+fused_bn); float32 is always first",
    )
    parser.add_argument(
        "--merge",
        nargs="*",
        default=None,
        help="only merge these results files (names under bench/results/) into --out, one size each",
    )
    parser.add_argument(
        "--pipeline-modes",
        nargs="*",
        default=[],
        help="precisions to run the pipeline in besides float32 (e.g. the one `auto` picks)",
    )
    parser.add_argument(
        "--pipeline-fused", action="store_true", help="run the extra pipeline modes with the fused batch norm"
    )
    parser.add_argument("--thread-sizes", type=int, nargs="*", default=[64, 96])
    parser.add_argument("--thread-mode", default="float32")
    parser.add_argument("--thread-fused", action="store_true")
    parser.add_argument(
        "--data-root", default=os.environ.get("MEDCORE_DATA_ROOT", str(ROOT.parent / "shared" / "datasets"))
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="measure only pipeline / plain, in this many pairs of fresh processes per --pair-sizes size",
    )
    parser.add_argument(
        "--pair-sizes", type=int, nargs="+", default=None, help="default: the sizes conditions.yaml's profiles ship"
    )
    parser.add_argument(
        "--pair-mode",
        default="auto",
        choices=PRECISIONS,
        help="precision of both sides (default: what `auto` picks on this CPU)",
    )
    parser.add_argument(
        "--pair-fused",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fused batch norm on both sides (default: the profile's default)",
    )
    parser.add_argument(
        "--pair-threads",
        type=int,
        default=None,
        help="MEDCORE_THREADS in every paired run, as a task holding this many pool slots gets (default: unset)",
    )
    parser.add_argument(
        "--pair-together",
        action="store_true",
        help="run a pair's two sides at once (as two one-slot trainings share a night) instead of in turn",
    )
    parser.add_argument("--pair-epochs", type=int, default=6, help="epochs per run; the first (the trace) is dropped")
    parser.add_argument(
        "--primitive-cache", type=int, default=None, help=f"set {CACHE_ENV} in every paired run (unset: 1024)"
    )
    parser.add_argument(
        "--out", default=None, help="results file name under bench/results/ (train_throughput, or train_pairs)"
    )
    parser.add_argument(
        "--execution",
        choices=["graph", "eager"],
        default="graph",
        help="paired mode: `eager` skips the graph trace (the tests' tiny runs; never for a measurement)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pair-worker", choices=SIDES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--intra", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--inter", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--fused", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.worker:
        return _worker(args)
    if args.pair_worker:
        return _pair_worker(args)
    if args.pairs:
        if args.pairs < 1 or args.pair_epochs < 2:
            parser.error("--pairs needs at least 1 pair and --pair-epochs at least 2 (the first epoch is the trace)")
        args.out = args.out or "train_pairs"
        paired(args)
        return None
    args.out = args.out or "train_throughput"

    if args.merge is not None:
        return merge(args.merge, args.out)
    from bench.peak import load_peak, share_of_peak
    from medcore.model import compute

    peak = load_peak()
    modes = [m for m in args.modes if m == "float32" or compute.cpu_supports_bf16()]
    fused_options = [False] if args.no_fused else [False, True]
    variants = args.variants or [variant_name(m, f) for m in modes for f in fused_options]
    variants = ["float32"] + [
        v for v in variants if v != "float32" and (v.startswith("float32") or compute.cpu_supports_bf16())
    ]
    results: dict = {
        "rounds": args.rounds,
        "modes": modes,
        "load_before": os.getloadavg(),
        "sizes": {},
        "auto_precision": compute.choose_precision("auto"),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for size in sorted(set(args.sizes) | set(args.thread_sizes)):
            images = images_for(size, args.images)
            config, profile, split = _split(Path(args.data_root), images, size, Path(tmp))
            row: dict = {"images": images, "load_before": os.getloadavg()}
            if size in args.sizes:
                row["decode"] = decode_rate(split[split["split"] == "train"], size)
                print(f"{size}px: decode+resize {row['decode']['images_per_second']:.0f} img/s", flush=True)
                # Unfused, like the plain `float32` it is divided by: the profile's default (fused) would make
                # the ratio compare two different models of batch norm.
                row["pipeline"] = {
                    "float32": pipeline_fit(config, profile, split, args.rounds + 1, Path(tmp), fused=False)
                }
                for mode in args.pipeline_modes:
                    key = variant_name(mode, args.pipeline_fused)
                    row["pipeline"][key] = pipeline_fit(
                        config, profile, split, args.rounds + 1, Path(tmp), mode, fused=args.pipeline_fused
                    )
                row["plain"] = plain_variants(config, profile, split, variants, args.rounds)
                pipe, plain = row["pipeline"]["float32"], row["plain"]["float32"]
                row["ratio"] = pipe["images_per_second"] / plain["images_per_second"]
                # What the ratio could be off by: the relative spread of either side's steady epochs.
                row["ratio_noise"] = max(pipe["spread"] or 0, plain["spread"] or 0)
                for name, r in [*row["plain"].items(), *(("pipeline " + k, v) for k, v in row["pipeline"].items())]:
                    dtype = "bfloat16" if ("bfloat16" in name or "amp" in name) else "float32"
                    r["share_of_peak"] = share_of_peak(r["images_per_second"], size, peak, "float32")
                    r["share_of_own_peak"] = share_of_peak(r["images_per_second"], size, peak, dtype)
                print(
                    f"{size}px: pipeline {pipe['images_per_second']:.1f} img/s, plain {plain['images_per_second']:.1f}"
                    f" img/s, ratio {row['ratio']:.3f} (noise {row['ratio_noise']:.2f})",
                    flush=True,
                )
                for name, r in row["plain"].items():
                    print(
                        f"{size}px: plain {name}: {r['images_per_second']:.1f} img/s ({r['min']:.1f}-{r['max']:.1f})"
                        f", x{r['images_per_second'] / plain['images_per_second']:.2f} float32",
                        flush=True,
                    )
                for name, r in row["pipeline"].items():
                    print(
                        f"{size}px: pipeline {name}: {r['images_per_second']:.1f} img/s "
                        f"({r['min']:.1f}-{r['max']:.1f})",
                        flush=True,
                    )
            if size in args.thread_sizes:
                row["threads"] = {}
                for label, intra, inter, processes in THREAD_GRID:
                    row["threads"][label] = concurrent(args, size, intra, inter, processes, images // processes)
                    print(f"{size}px: {label}: {row['threads'][label]['images_per_second']:.1f} img/s", flush=True)
            row["load_after"] = os.getloadavg()
            results["sizes"][size] = row
    results["load_after"] = os.getloadavg()
    results["wall_seconds"] = time.perf_counter() - started
    from bench.common import write_result

    out = write_result(args.out, results)
    print(f"raw results: {out}")
    ratios = [r["ratio"] for r in results["sizes"].values() if "ratio" in r]
    if ratios:
        print(f"ratio={min(ratios):.3f}")


if __name__ == "__main__":
    main()
