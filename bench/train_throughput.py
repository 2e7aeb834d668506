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
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.train_common import (  # noqa: E402
    PAIR_IMAGES,
    _result,
    _spawn,
    _split,
    _tensors,
    images_for,
    in_memory,
    pipeline_fit,
    steady,
    variant_name,
)
from bench.train_pairs import CACHE_ENV, SIDES, _pair_worker, paired  # noqa: E402

# (label, intra-op, inter-op, processes): one task on both cores, or two tasks side by side.
THREAD_GRID = (
    ("1 task, intra 2 / inter 2", 2, 2, 1),
    ("1 task, intra 2 / inter 1", 2, 1, 1),
    ("2 tasks, intra 1 / inter 1 each", 1, 1, 2),
    ("2 tasks, intra 1 / inter 2 each", 1, 2, 2),
)


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


def _worker(args) -> None:
    """Subprocess mode: a plain float32 fit with fixed thread pools, printing its steady images/s as JSON."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    with tempfile.TemporaryDirectory() as tmp:
        config, profile, split = _split(Path(args.data_root), args.images, args.size, Path(tmp))
        result = plain_variants(config, profile, split, [variant_name(args.mode, args.fused)], args.rounds)
    print("RESULT" + json.dumps(next(iter(result.values()))))


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


def _parser() -> argparse.ArgumentParser:
    from medcore.model.compute import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_fit_args(parser)
    _add_pair_args(parser, PRECISIONS)
    _add_worker_args(parser)
    return parser


def _add_fit_args(parser: argparse.ArgumentParser) -> None:
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


def _add_pair_args(parser: argparse.ArgumentParser, precisions) -> None:
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
        choices=precisions,
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


def _add_worker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pair-worker", choices=SIDES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--intra", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--inter", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--fused", action="store_true", help=argparse.SUPPRESS)


def _plain_variants_for(args, compute) -> tuple[list[str], list[str]]:
    """The precisions to measure and the plain-fit variants, float32 first."""
    modes = [m for m in args.modes if m == "float32" or compute.cpu_supports_bf16()]
    fused_options = [False] if args.no_fused else [False, True]
    variants = args.variants or [variant_name(m, f) for m in modes for f in fused_options]
    variants = ["float32"] + [
        v for v in variants if v != "float32" and (v.startswith("float32") or compute.cpu_supports_bf16())
    ]
    return modes, variants


def _fit_row(args, row: dict, size: int, inputs: tuple, variants: list[str], peak) -> None:
    """Decode rate, pipeline and plain fits of one size into `row`, with their shares of peak."""
    from bench.peak import share_of_peak

    config, profile, split, tmp = inputs
    row["decode"] = decode_rate(split[split["split"] == "train"], size)
    print(f"{size}px: decode+resize {row['decode']['images_per_second']:.0f} img/s", flush=True)
    # Unfused, like the plain `float32` it is divided by: the profile's default (fused) would make
    # the ratio compare two different models of batch norm.
    row["pipeline"] = {"float32": pipeline_fit(config, profile, split, args.rounds + 1, tmp, fused=False)}
    for mode in args.pipeline_modes:
        key = variant_name(mode, args.pipeline_fused)
        row["pipeline"][key] = pipeline_fit(
            config, profile, split, args.rounds + 1, tmp, mode, fused=args.pipeline_fused
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


def _print_fit_row(size: int, row: dict) -> None:
    pipe, plain = row["pipeline"]["float32"], row["plain"]["float32"]
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
            f"{size}px: pipeline {name}: {r['images_per_second']:.1f} img/s ({r['min']:.1f}-{r['max']:.1f})",
            flush=True,
        )


def _thread_row(args, row: dict, size: int, images: int) -> None:
    row["threads"] = {}
    for label, intra, inter, processes in THREAD_GRID:
        row["threads"][label] = concurrent(args, size, intra, inter, processes, images // processes)
        print(f"{size}px: {label}: {row['threads'][label]['images_per_second']:.1f} img/s", flush=True)


def _measure_sizes(args, results: dict, variants: list[str], peak) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for size in sorted(set(args.sizes) | set(args.thread_sizes)):
            images = images_for(size, args.images)
            config, profile, split = _split(Path(args.data_root), images, size, Path(tmp))
            row: dict = {"images": images, "load_before": os.getloadavg()}
            if size in args.sizes:
                _fit_row(args, row, size, (config, profile, split, Path(tmp)), variants, peak)
                _print_fit_row(size, row)
            if size in args.thread_sizes:
                _thread_row(args, row, size, images)
            row["load_after"] = os.getloadavg()
            results["sizes"][size] = row


def _throughput(args) -> None:
    from bench.common import write_result
    from bench.peak import load_peak
    from medcore.model import compute

    peak = load_peak()
    modes, variants = _plain_variants_for(args, compute)
    results: dict = {
        "rounds": args.rounds,
        "modes": modes,
        "load_before": os.getloadavg(),
        "sizes": {},
        "auto_precision": compute.choose_precision("auto"),
    }
    started = time.perf_counter()
    _measure_sizes(args, results, variants, peak)
    results["load_after"] = os.getloadavg()
    results["wall_seconds"] = time.perf_counter() - started
    out = write_result(args.out, results)
    print(f"raw results: {out}")
    ratios = [r["ratio"] for r in results["sizes"].values() if "ratio" in r]
    if ratios:
        print(f"ratio={min(ratios):.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
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
    return _throughput(args)


if __name__ == "__main__":
    main()
