"""Validation speed and memory on the largest real set (knee_oa by default): images/s, wall time, peak RSS.

Each measurement runs in a fresh child process, so its peak RSS (getrusage) is its own: once on the
whole set and once on a copy of every second image. The last line is the ratio of the two peaks;
near 1.0 means memory does not grow with the number of images. Not a test: run it by hand.

    .venv/bin/python bench/validate_speed.py [--condition knee_osteoarthritis] [--workers N]

MEDCORE_DATA_ROOT picks the data (default: ../shared/datasets beside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "conditions.yaml"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _child(condition_name: str, data_root: str, workers: int | None) -> None:
    """Validate once in this process and print one JSON line of figures."""
    os.environ["MEDCORE_DATA_ROOT"] = data_root
    import cv2  # noqa: F401  (loaded before the baseline so the baseline is the libraries, not the data)
    import PIL.Image  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    from medcore.config import load_config
    from medcore.data.validation import validate_condition

    config = load_config(CONFIG)
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    result = validate_condition(config, config.conditions[condition_name], workers=workers)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "images": result.totals.get("listed", 0),
                "seconds": seconds,
                "ok": result.ok,
                "baseline_mb": baseline,
                "peak_mb": _peak_rss_mb(),
                "reason": result.reason,
            }
        )
    )


def _measure(condition_name: str, data_root: Path, workers: int | None) -> dict:
    command = [sys.executable, __file__, "--child", str(data_root), "--condition", condition_name]
    if workers:
        command += ["--workers", str(workers)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _half_copy(condition_name: str, data_root: Path, out: Path) -> None:
    """Copy every second image (and, for a CSV layout, the matching manifest rows) under `out`."""
    import pandas as pd

    os.environ["MEDCORE_DATA_ROOT"] = str(data_root)
    from medcore.config import load_config
    from medcore.data.datasets import read_manifest

    config = load_config(CONFIG)
    condition = config.conditions[condition_name]
    source = config.dataset_dir(condition)
    kept = sorted(read_manifest(config, condition)["relpath"])[::2]
    for relpath in kept:
        target = out / condition.dataset / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relpath, target)
    if condition.layout == "csv":
        table = pd.read_csv(source / str(condition.manifest), dtype=str, keep_default_na=False)
        table[table[condition.image_column].isin(set(kept))].to_csv(
            out / condition.dataset / str(condition.manifest), index=False
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", default="knee_osteoarthritis")
    parser.add_argument("--workers", type=int, default=None, help="file-reading threads (default: CPUs, at most 4)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.condition, args.child, args.workers)
        return

    data_root = Path(os.environ.get("MEDCORE_DATA_ROOT") or ROOT.parent / "shared" / "datasets").resolve()
    if not (data_root / "README.md").exists():
        print(f"skipped: real datasets not found at {data_root} (set MEDCORE_DATA_ROOT)")
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    full = _measure(args.condition, data_root, args.workers)
    print(
        f"{args.condition}: {full['images']} images in {full['seconds']:.1f} s = "
        f"{full['images'] / full['seconds']:.0f} images/s on {cpus} CPUs; ok={full['ok']}"
    )
    print(f"  peak RSS {full['peak_mb']:.0f} MB (libraries alone {full['baseline_mb']:.0f} MB)")
    with tempfile.TemporaryDirectory(prefix="medcore-bench-") as tmp:
        _half_copy(args.condition, data_root, Path(tmp))
        half = _measure(args.condition, Path(tmp), args.workers)
    print(
        f"half set: {half['images']} images in {half['seconds']:.1f} s, peak RSS {half['peak_mb']:.0f} MB "
        f"(libraries alone {half['baseline_mb']:.0f} MB)"
    )
    growth_full, growth_half = full["peak_mb"] - full["baseline_mb"], half["peak_mb"] - half["baseline_mb"]
    print(f"  above the libraries: full {growth_full:.0f} MB, half {growth_half:.0f} MB")
    sys.path.insert(0, str(ROOT))
    from bench.common import write_result

    write_result(
        "validate_speed",
        {
            "condition": args.condition,
            "cpus": cpus,
            "full": full,
            "half": half,
            "images_per_second": full["images"] / full["seconds"],
            "peak_rss_ratio": full["peak_mb"] / half["peak_mb"],
        },
    )
    print(f"ratio={full['peak_mb'] / half['peak_mb']:.3f}")


if __name__ == "__main__":
    main()
