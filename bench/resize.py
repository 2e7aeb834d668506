"""Squash against pad: the same profile trained twice on the real sets, once per way of making an image square.

Usage: .venv/bin/python bench/resize.py [--config conditions.yaml] [--condition limb_abnormalities ...]
       [--profile standard] [--epochs N] [--fraction 1.0] [--name resize] [--reuse VARIANT=RUN_FOLDER ...]

`squash` stretches every image to the square; `pad` keeps its aspect ratio and pads with black (and
Grad-CAM masks the padding out). Each variant is one `medcore run` (the stages the DAG runs) with a
config that `extends:` the given one and sets `resize` on every chosen condition, a registry of its
own and the `retrain` policy, so neither variant starts from the other's model. Both see the same
images, split alike (the split depends on the data and the seed only), so the two are also compared
paired: pad − squash ROC AUC on the same test images (and, where the set has studies, the same test
studies), with a bootstrap interval resampling patients.

Per variant and condition it records, read back from the files the stages wrote: the resize the
training record says was used, the test ROC AUC with its 95 % interval (per image; per study too,
with Cohen's kappa at the val-chosen threshold, where the condition has studies), epochs run, train
minutes, and the run's wall and CPU minutes. Per condition it records the width / height of its
images (read from the file headers) and the share of a padded input that is padding.

`--reuse pad=runs/bench/nightly-.../runs/<run id>` takes a variant's models from a run that already trained
them instead of training them again: an interrupted bench/resize.py run, or a night whose config and seed
are this one's (a night trains the shipped `resize`). Training on this CPU is deterministic (two cold nights
gave every test AUC to the last digit), so the reused models should be the ones this bench would train. Each
record still says which resize its training used, and the pairing counts the test images both share.

`--fraction F` keeps a keyed-hash share F of each set's groups (train, val and test alike; as
bench/nights.py does) for a quicker run. Writes bench/results/<name>.json; `bench/report.py` turns
it into docs/benchmarks/resize.md. Skips (exit 0) when the real sets are not there ($MEDCORE_DATA_ROOT,
default ../shared/datasets).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd

from bench.common import NO_DATA, ROOT, bench_workdir, real_sets_config, write_result
from bench.nights import night_rows, reference_splits, run_night, stage
from medcore.jsonio import read_json
from medcore.layout import RunLayout

VARIANTS = ("squash", "pad")
ASPECT_SAMPLE = 2000  # image headers read per condition: enough for mean / min / max, and a second's work


def aspect_figures(paths: list[str], seed: int) -> dict[str, Any]:
    """Width / height of the images (a seeded sample of at most ASPECT_SAMPLE), from their headers alone.

    `padding` is the share of the square a `pad` input fills with black: 1 - short side / long side.
    Files PIL cannot open (DICOM) are counted, not guessed.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    picked = list(paths) if len(paths) <= ASPECT_SAMPLE else list(rng.choice(paths, ASPECT_SAMPLE, replace=False))
    ratios, unread = [], 0
    for path in picked:
        try:
            with Image.open(path) as image:  # parses the header only; no pixels are decoded
                width, height = image.size
        except (OSError, ValueError):
            unread += 1
            continue
        ratios.append(width / height)
    if not ratios:
        return {"images": len(paths), "read": 0, "unread": unread}
    r = np.asarray(ratios)
    return {
        "images": len(paths),
        "read": len(r),
        "unread": unread,
        "width_over_height": {
            "mean": float(r.mean()),
            "median": float(np.median(r)),
            "min": float(r.min()),
            "max": float(r.max()),
        },
        "square_within_5pct": float(np.mean(np.abs(r - 1.0) <= 0.05)),
        "padding": float(np.mean(1.0 - np.minimum(r, 1.0 / r))),
    }


def _interval(metrics: dict[str, Any], name: str) -> dict[str, Any] | None:
    return (metrics.get("intervals") or {}).get(name)


def variant_record(run: RunLayout, condition: str, profile: str) -> dict[str, Any]:
    """What one variant did for one condition, from the run's training.json and metrics.json (or failure.json)."""
    paths = run.model(condition, profile)
    training = read_json(paths.training_json) if paths.training_json.exists() else {}
    metrics = read_json(paths.metrics_json) if paths.metrics_json.exists() else {}
    failure = read_json(paths.failure_json) if paths.failure_json.exists() else None
    # Where the set has studies, the headline figures are per study and the image ones sit under image_level.
    by_study = metrics.get("unit") == "study"
    image = metrics.get("image_level") if by_study else metrics
    record: dict[str, Any] = {
        "status": "failed" if failure or not metrics else "succeeded",
        "failure": failure and {k: failure.get(k) for k in ("stage", "error")},
        "resize": training.get("resize"),
        "image_size": training.get("image_size"),
        "epochs_run": training.get("epochs_run"),
        "epochs_planned": training.get("epochs_planned"),
        "early_stopped": training.get("early_stopped"),
        "best_val_auc": training.get("best_val_auc"),
        "train_images": training.get("train_images"),
        "train_minutes": round(training["wall_seconds"] / 60, 2) if training.get("wall_seconds") else None,
        "images_per_second": training.get("images_per_second"),
        "estimate": metrics.get("estimate") or "test split",
        "image": None,
        "study": None,
    }
    if image:
        record["image"] = {
            "n": image.get("n"),
            "n_positive": image.get("n_positive"),
            "roc_auc": image.get("roc_auc"),
            "interval": _interval(image, "roc_auc"),
            "unit": (image.get("bootstrap") or {}).get("unit"),
        }
    if by_study:
        record["study"] = {
            "n": metrics.get("n"),
            "n_positive": metrics.get("n_positive"),
            "n_images": metrics.get("n_images"),
            "aggregation": metrics.get("study_aggregation"),
            "roc_auc": metrics.get("roc_auc"),
            "interval": _interval(metrics, "roc_auc"),
            "kappa": metrics.get("kappa"),
            "kappa_interval": _interval(metrics, "kappa"),
            "threshold": metrics.get("threshold"),
        }
    return record


def _compare(frame: pd.DataFrame, config) -> dict[str, Any]:
    """pad − squash ROC AUC on `frame`'s paired probabilities, by paired bootstrap."""
    from medcore.assess.evaluation import paired_auc_difference

    settings = config.evaluation
    result = paired_auc_difference(
        frame["label"].to_numpy(),
        frame["probability_pad"].to_numpy(),
        frame["probability_squash"].to_numpy(),
        groups=frame["group"].astype(str).to_numpy() if "group" in frame.columns else None,
        resamples=settings.bootstrap_resamples,
        confidence=settings.confidence,
        seed=config.seed,
    )
    # paired_auc_difference speaks of a challenger and a champion: here pad and squash.
    return {
        "n": result["n"],
        "n_positive": result["n_positive"],
        "unit": result["unit"],
        "units": result["units"],
        "pad_auc": result["challenger_auc"],
        "squash_auc": result["champion_auc"],
        "delta": result["delta"],
        "low": result["low"],
        "high": result["high"],
        "confidence": result["confidence"],
        "resamples": result["resamples"],
    }


def _study_comparison(merged: pd.DataFrame, condition: str, config) -> dict[str, Any]:
    """The paired comparison on the studies, each variant's images aggregated as the condition says."""
    from medcore.assess.evaluation import aggregate_studies

    how = config.conditions[condition].study_aggregation
    studies = {
        v: aggregate_studies(
            merged.rename(columns={f"probability_{v}": "probability"})[
                [c for c in ("study", "label", "group") if c in merged.columns] + ["probability"]
            ],
            how,
        )
        for v in VARIANTS
    }
    both = studies["squash"].merge(studies["pad"][["study", "probability"]], on="study", suffixes=("_squash", "_pad"))
    return {**_compare(both, config), "aggregation": how}


def paired_record(runs: dict[str, RunLayout], condition: str, profile: str, config) -> dict[str, Any] | None:
    """pad − squash ROC AUC on the test images (and studies) both variants scored, by paired bootstrap."""
    from medcore.errors import MedcoreError

    files = {v: runs[v].model(condition, profile).predictions_csv for v in VARIANTS}
    if not all(f.exists() for f in files.values()):
        return None
    frames = {v: pd.read_csv(f, dtype={"relpath": str, "group": str, "study": str}) for v, f in files.items()}
    keep = [c for c in ("relpath", "label", "group", "study", "probability") if c in frames["squash"].columns]
    merged = frames["squash"][keep].merge(
        frames["pad"][["relpath", "probability"]], on="relpath", suffixes=("_squash", "_pad")
    )
    out: dict[str, Any] = {
        "images_squash": len(frames["squash"]),
        "images_pad": len(frames["pad"]),
        "images_paired": len(merged),
    }
    try:
        out["image"] = _compare(merged, config)
    except MedcoreError as exc:  # e.g. a reduced run whose test split kept one class: say so, do not guess
        return {**out, "error": str(exc)}
    if "study" in merged.columns:
        out["study"] = _study_comparison(merged, condition, config)
    return out


def reused_runs(parser: argparse.ArgumentParser, given: list[str]) -> dict[str, RunLayout]:
    """`--reuse VARIANT=RUN_FOLDER` as run layouts by variant; a parser error names a bad value."""
    reused: dict[str, RunLayout] = {}
    for value in given:
        variant, _, folder = value.partition("=")
        if variant not in VARIANTS or not folder:
            parser.error(f"--reuse {value!r}: expected VARIANT=RUN_FOLDER with VARIANT one of {', '.join(VARIANTS)}")
        path = Path(folder).resolve()
        if not (path / "run.json").is_file():
            parser.error(f"--reuse {value!r}: {path} is not a run folder (it has no run.json)")
        reused[variant] = RunLayout(path.parent, path.name)
    return reused


def variant_config(folder: Path, base_config: Path, data: Path, conditions: list[str], resize: str) -> Path:
    """A config that extends `base_config`, with `resize` on every chosen condition and runs of its own."""
    # The condition's `resize` overrides every profile's, so setting it here decides the variant outright.
    lines = [
        f"extends: {base_config.resolve()}",
        f"data_root: {data}",
        f"runs_root: {folder / 'runs'}",
        "nightly: {policy: retrain}",
        "conditions:",
        *(f"  {c}: {{resize: {resize}}}" for c in conditions),
    ]
    path = folder / "resize.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "conditions.yaml"))
    parser.add_argument(
        "--condition", action="append", default=[], help="repeat for several (default: limb_abnormalities)"
    )
    parser.add_argument("--profile", default="standard", help="the profile both variants train")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument("--fraction", type=float, default=1.0, help="keep this keyed-hash share of each set's groups")
    parser.add_argument("--name", default="resize")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="VARIANT=RUN_FOLDER",
        help="take this variant's models from a run folder that trained them (repeat for both)",
    )
    return parser


@dataclass
class _Bench:
    """One resize comparison: its arguments, inputs and the figures gathered so far."""

    args: argparse.Namespace
    argv: list[str] | None
    data_root: Any
    base: Any
    conditions: list[str]
    data: Any = None
    variants: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, RunLayout] = field(default_factory=dict)
    aspect: dict[str, Any] = field(default_factory=dict)
    paired: dict[str, Any] = field(default_factory=dict)


def _save(bench: _Bench) -> Path:
    """Write the figures so far (after each variant, so an interrupted run keeps what it measured)."""
    args, base, conditions = bench.args, bench.base, bench.conditions
    return write_result(
        args.name,
        {
            "config": os.path.relpath(Path(args.config).resolve(), ROOT),
            "data_root": str(bench.data_root),
            "command": "bench/resize.py " + " ".join(bench.argv if bench.argv is not None else sys.argv[1:]),
            "conditions": conditions,
            "profile": args.profile,
            "image_size": base.profiles[args.profile].image_size,
            # per condition: a condition may override the profile's epochs (limb trains 18 of standard's 6)
            "epochs": {
                c: args.epochs or base.profiles[args.profile].for_condition(base.conditions[c]).epochs
                for c in conditions
            },
            "fraction": args.fraction,
            "seed": base.seed,
            "variants": bench.variants,
            "aspect": bench.aspect,
            "paired": bench.paired,
            "complete": len(bench.variants) == len(VARIANTS) and len(bench.paired) == len(conditions),
        },
    )


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0.0 < args.fraction <= 1.0:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")


def _check_names(parser: argparse.ArgumentParser, args: argparse.Namespace, base, conditions: list[str]) -> None:
    unknown = [f"condition {c!r}" for c in conditions if c not in base.conditions]
    unknown += [f"profile {args.profile!r}"] if args.profile not in base.profiles else []
    if unknown:
        parser.error(f"{', '.join(unknown)} not in {args.config}")


def _stage_data(bench: _Bench, workdir: Path):
    """The data root the variants train on: the real sets, or a keyed-hash share of their groups as links."""
    args, base = bench.args, bench.base
    if args.fraction >= 1.0:
        return bench.data_root
    data = workdir / "data"
    print(f"{args.name}: keeping {args.fraction:.0%} of the groups of {', '.join(bench.conditions)}", flush=True)
    for c, split in reference_splits(base, bench.conditions).items():
        stage(base, c, night_rows(split, 1.0, args.fraction, base.seed), data)
    return data


def _reuse_variant(bench: _Bench, resize: str, run: RunLayout) -> None:
    bench.runs[resize] = run
    print(f"  {resize}: reusing {os.path.relpath(run.root, ROOT)}", flush=True)
    bench.variants[resize] = {
        "reused": True,
        "wall_seconds": None,
        "cpu_minutes": None,
        "exit": None,
        "run_folder": os.path.relpath(run.root, ROOT),
        "conditions": {c: variant_record(run, c, bench.args.profile) for c in bench.conditions},
    }


def _train_variant(bench: _Bench, resize: str, workdir: Path, env: dict) -> None:
    args, conditions = bench.args, bench.conditions
    folder = workdir / resize
    folder.mkdir(parents=True, exist_ok=True)
    config_path = variant_config(folder, Path(args.config), bench.data, conditions, resize)
    run_id = f"resize-{resize}"
    print(f"  {resize}: medcore run of {', '.join(conditions)} / {args.profile}", flush=True)
    night = run_night(
        config_path,
        {**env, "MEDCORE_REGISTRY_ROOT": str(folder / "registry")},
        run_id,
        conditions,
        [args.profile],
        args.epochs,
    )
    run = bench.runs[resize] = RunLayout(folder / "runs", run_id)
    bench.variants[resize] = {
        **night,
        "run_folder": os.path.relpath(run.root, ROOT),
        "conditions": {c: variant_record(run, c, args.profile) for c in conditions},
    }


def _print_variant(variant: dict[str, Any]) -> None:
    for c, r in variant["conditions"].items():
        shown = (r["image"] or {}).get("roc_auc")
        study = (r["study"] or {}).get("roc_auc")
        print(
            f"    {c}: {r['status']}, resize {r['resize']}, test AUC {shown if shown is None else f'{shown:.3f}'}"
            + (f", per study {study:.3f}" if study is not None else "")
            + f", {r['epochs_run']} epochs, {r['train_minutes']} train min",
            flush=True,
        )


def _compare_variants(bench: _Bench) -> None:
    for c in bench.conditions:
        split = bench.runs["squash"].model(c, bench.args.profile).split_csv
        if split.exists():
            bench.aspect[c] = aspect_figures(pd.read_csv(split, dtype={"path": str})["path"].tolist(), bench.base.seed)
        bench.paired[c] = paired_record(bench.runs, c, bench.args.profile, bench.base)


def _print_paired(paired: dict[str, Any]) -> None:
    for c, p in paired.items():
        for unit in ("image", "study"):
            if p and p.get(unit):
                d = p[unit]
                print(f"  {c} pad − squash per {unit}: {d['delta']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    reused = reused_runs(parser, args.reuse)
    _check_args(parser, args)
    found = real_sets_config(args.config)
    if found is None:
        print(NO_DATA)
        return 0
    data_root, base = found
    conditions = args.condition or ["limb_abnormalities"]
    _check_names(parser, args, base, conditions)
    workdir, _ = bench_workdir(args.name)
    bench = _Bench(args, argv, data_root, base, conditions)
    bench.data = _stage_data(bench, workdir)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDCORE_")},
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    for resize in VARIANTS:
        if resize in reused:
            _reuse_variant(bench, resize, reused[resize])
            _save(bench)
            continue
        _train_variant(bench, resize, workdir, env)
        _save(bench)
        _print_variant(bench.variants[resize])
    _compare_variants(bench)
    path = _save(bench)
    if bench.data != data_root:
        shutil.rmtree(bench.data, ignore_errors=True)  # links to the real sets; the runs stay
    _print_paired(bench.paired)
    print(f"raw figures in {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
