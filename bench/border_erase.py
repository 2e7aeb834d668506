"""Issue 37 on the real sets: the three probes' figures of trained models, and border erasing's paired effect.

Usage: nice -n 10 .venv/bin/python bench/border_erase.py [--condition pneumonia ...] [--profile standard]
       [--erase 0.5] [--band 0.125] [--reuse DIR] [--name border_erase]

Trains each chosen (condition, profile) twice, in two `medcore run` processes side by side (one core each,
MEDCORE_THREADS=1, each with an empty registry of its own, so both train from scratch): conditions.yaml as
shipped ("shipped"), and the same with `augmentation.border_erase` on ("erased"). The seed and the stable
splits are the same, so both score the very same test images, and the difference in test ROC AUC is paired
(evaluation's patient bootstrap). The probes are the Grad-CAM stage's own (empty film, border against centre,
randomisation check) as the night runs them. `--reuse DIR` reads the runs under DIR/<arm>/runs/ of an earlier
call (or made by hand the same way, one run per condition if need be) instead of training.
Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, bench_workdir, data_root_or_none, medcore_env, write_result
from medcore.jsonio import read_json
from medcore.layout import RunLayout

ARMS = ("shipped", "erased")


def arm_config(workdir: Path, arm: str, profiles: list[str], erase: float, band: float) -> Path:
    """conditions.yaml, with border erasing switched on in each chosen profile for the `erased` arm."""
    from medcore.config import load_config

    lines = [f"extends: {ROOT / 'conditions.yaml'}"]
    if arm == "erased":
        shipped = load_config(ROOT / "conditions.yaml").profiles
        lines.append("profiles:")
        for name in profiles:
            a = shipped[name].augmentation
            lines.append(
                f"  {name}: {{augmentation: {{rotation: {a.rotation}, zoom: {a.zoom}, contrast: {a.contrast}, "
                f"horizontal_flip: {str(a.horizontal_flip).lower()}, border_erase: {erase}, border_band: {band}}}}}"
            )
    path = workdir / arm / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def train_arms(workdir: Path, data_root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Both arms' `medcore run`, side by side; their wall seconds. Raises if either fails."""
    picks = [f"--condition={c}" for c in args.condition] + [f"--profile={p}" for p in args.profile]
    started, procs = time.perf_counter(), {}
    for arm in ARMS:
        config = arm_config(workdir, arm, args.profile, args.erase, args.band)
        env = {**os.environ, **medcore_env(config, data_root, workdir / arm), "MEDCORE_THREADS": "1"}
        log = (workdir / arm / "run.log").open("w")
        cmd = [str(ROOT / ".venv" / "bin" / "medcore"), "run", "--config", str(config), *picks, "--run-id", arm]
        procs[arm] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    walls = {}
    for arm, (proc, log) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{arm}: medcore run failed (exit {proc.returncode}); log: {workdir / arm / 'run.log'}")
        log.close()
        walls[arm] = time.perf_counter() - started
    return walls


def trained_run(runs_root: Path, condition: str, profile: str) -> RunLayout | None:
    """The first run under `runs_root` (by name) that evaluated `condition`/`profile`, if any."""
    for folder in sorted(p for p in runs_root.glob("*") if p.is_dir()):
        run = RunLayout(runs_root, folder.name)
        if run.model(condition, profile).metrics_json.exists():
            return run
    return None


def model_figures(run: RunLayout, condition: str, profile: str) -> dict[str, Any]:
    """Test AUC with its interval, and each probe's headline figures and verdict, from one trained model."""
    paths = run.model(condition, profile)
    metrics, gradcam = read_json(paths.metrics_json), read_json(paths.gradcam_json)
    probes = gradcam.get("probes") or {}
    empty, border, sanity = probes.get("empty_film") or {}, probes.get("border") or {}, probes.get("sanity") or {}
    return {
        "test_auc": metrics["roc_auc"],
        "test_auc_interval": metrics.get("intervals", {}).get("roc_auc"),
        "empty_film": {
            "real_positive_median": empty.get("real_positive_median"),
            "real_negative_median": empty.get("real_negative_median"),
            "median_probability": {k: v["median_probability"] for k, v in (empty.get("kinds") or {}).items()},
            "fires_positive": empty.get("fires_positive"),
            "fires_negative": empty.get("fires_negative"),
        },
        "border": {k: border.get(k) for k in ("images", "roc_auc", "border_share", "centre_share", "fires")},
        "sanity": {
            "stages": [
                {k: s.get(k) for k in ("stage", "spearman_median", "ssim_median", "unchanged")}
                for s in sanity.get("stages", [])
            ],
            "fires": sanity.get("fires"),
            "at_chance": sanity.get("at_chance"),
        },
        "findings": [f["code"] for f in probes.get("findings", [])],
        "probe_seconds": probes.get("seconds"),
        "gradcam_seconds": (read_json(paths.timings_json).get("gradcam") or {}).get("seconds")
        if paths.timings_json.exists()
        else None,
    }


def paired_test_auc(shipped: RunLayout, erased: RunLayout, condition: str, profile: str) -> dict[str, Any]:
    """erased − shipped test ROC AUC on the same test images, patients resampled together (paired bootstrap)."""
    import pandas as pd

    from medcore.assess.metrics import paired_auc_difference

    a = pd.read_csv(shipped.model(condition, profile).predictions_csv)
    b = pd.read_csv(erased.model(condition, profile).predictions_csv)
    both = a.merge(b[["path", "probability"]], on="path", suffixes=("_shipped", "_erased"), validate="1:1")
    if len(both) != len(a) or len(both) != len(b):
        raise SystemExit(f"{condition}/{profile}: the two arms' test images differ ({len(a)}, {len(b)}, {len(both)})")
    groups = both["group"].astype(str).to_numpy() if "group" in both.columns else None
    return paired_auc_difference(
        both["label"].to_numpy(), both["probability_erased"].to_numpy(), both["probability_shipped"].to_numpy(), groups
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--condition", action="append", default=[])
    parser.add_argument("--profile", action="append", default=[])
    parser.add_argument("--erase", type=float, default=0.5, help="share of training images whose band is erased")
    parser.add_argument("--band", type=float, default=0.125, help="the band's width, a fraction of the side")
    parser.add_argument("--reuse", type=Path, help="an earlier call's folder: compare its runs, train nothing")
    parser.add_argument("--name", default="border_erase")
    parser.add_argument("--note", default="", help="recorded with the figures (how --reuse's runs were made)")
    args = parser.parse_args(argv)
    args.condition, args.profile = args.condition or ["pneumonia"], args.profile or ["standard"]

    walls: dict[str, float] = {}
    if args.reuse:
        workdir = args.reuse
    else:
        data_root = data_root_or_none()
        if data_root is None:
            raise SystemExit("the real sets are not there (set MEDCORE_DATA_ROOT, default ../shared/datasets)")
        workdir, _ = bench_workdir(args.name)
        walls = train_arms(workdir, data_root, args)
    models = []
    for condition in args.condition:
        for profile in args.profile:
            record: dict[str, Any] = {"condition": condition, "profile": profile}
            runs = {arm: run for arm in ARMS if (run := trained_run(workdir / arm / "runs", condition, profile))}
            for arm, run in runs.items():
                record[arm] = {"run": run.run_id, **model_figures(run, condition, profile)}
            if len(runs) == len(ARMS):
                record["erased_minus_shipped"] = paired_test_auc(runs["shipped"], runs["erased"], condition, profile)
            models.append(record)
            print(f"{condition}/{profile}: " + ", ".join(f"{a} {record[a]['findings']}" for a in ARMS if a in record))
    out = write_result(
        args.name,
        {
            "erase": args.erase,
            "band": args.band,
            "workdir": str(workdir),
            "walls": walls,
            "note": args.note,
            "models": models,
        },
    )
    print(f"raw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
