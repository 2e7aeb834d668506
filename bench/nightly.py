"""The whole nightly run on the real sets, through the DAG under a real scheduler: wall time, CPU use, figures.

Usage: .venv/bin/python bench/nightly.py [--config conditions.yaml] [--condition pneumonia ...]
       [--profile standard ...] [--epochs N] [--budget MIN] [--name nightly]
       [--shared-backbone registry/shared_backbone.keras]

Trains every (condition, profile) of the config exactly as the scheduled DAG does (embedded Airflow,
LocalExecutor, the `training` pool sharing the cores), from an empty champion registry: the first
night of a new installation. Writes bench/results/<name>.json with the run's wall time, the
machine-wide CPU busy fraction while it ran, and per model the test figures with their 95 %
intervals and the training cost, all read back from the files the stages wrote. The run folder
stays under runs/bench/ for a closer look at its report.md. `--shared-backbone` puts a backbone from
`medcore pretrain` into the run's registry (with its record), for configs whose profiles say `weights: shared`.
`--after bench/results/nightly.json` measures the night after that one instead: the run uses the
champion registry the earlier night left (in place, as an installation's second night would), so the
nightly policy continues from, or skips past, each champion. With `configs/following-night.yaml` nothing is
skipped: the dearest following night, the one after every set has changed.
Skips (exit 0) when the real sets are not there ($MEDCORE_DATA_ROOT, default ../shared/datasets).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    NO_DATA,
    ROOT,
    bench_workdir,
    data_root_or_none,
    ensemble_rows,
    medcore_env,
    model_rows,
    scheduler_run,
    write_result,
)
from medcore.jsonio import read_json
from medcore.layout import RegistryLayout


def place_shared_backbone(source: Path, registry: RegistryLayout) -> dict | None:
    """Copy a pre-trained backbone into the run's registry; return its pre-training record (None if absent)."""
    registry.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, registry.shared_backbone)
    record = source.with_suffix(".json")
    if not record.is_file():
        return None
    shutil.copyfile(record, registry.shared_backbone_record)
    return {k: v for k, v in read_json(record).items() if k != "versions"}


def earlier_night(result: Path) -> tuple[Path, dict]:
    """The champion registry an earlier `bench/nightly.py` run left, and what to record about that run."""
    earlier = read_json(result)
    registry = (ROOT / earlier["run_folder"]).parents[1] / "registry"
    if not any(registry.glob("*.json")):
        raise SystemExit(f"{result}: its run left no champions in {registry}; run the first night again")
    return registry, {"result": os.path.relpath(result.resolve(), ROOT), "run_id": earlier["run"]["run_id"]}


def night_plan_against_actual(folder: Path) -> dict | None:
    """The planner's prediction against the night, per chain, as the report's summary.json holds it."""
    summary = folder / "summary.json"
    return read_json(summary).get("night") if summary.is_file() else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "conditions.yaml"))
    parser.add_argument("--condition", action="append", default=[])
    parser.add_argument("--profile", action="append", default=[])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--name", default="nightly")
    parser.add_argument("--budget", type=float, default=None, help="the night budget in minutes (trigger Param)")
    parser.add_argument(
        "--shared-backbone",
        type=Path,
        default=None,
        help="a shared_backbone.keras from `medcore pretrain` (its .json beside it is kept too)",
    )
    parser.add_argument(
        "--after",
        type=Path,
        default=None,
        help="an earlier nightly result (bench/results/nightly.json): run the night after it, on its champions",
    )
    return parser


def _print_summary(run: dict, models: list[dict], path: Path) -> None:
    done = sum(m["status"] == "succeeded" for m in models)
    print(
        f"{run['state']}: {done}/{len(models)} models in {run['wall_seconds'] / 60:.1f} min, "
        f"CPU busy {run['cpu_busy']:.0%}; raw figures in {path.relative_to(ROOT)}"
    )
    for m in models:
        auc = m["test"]["roc_auc"]
        print(
            f"  {m['condition']:<20} {m['profile']:<10} {m['status']:<10} test AUC "
            f"{'-' if auc is None else f'{auc:.3f}'}  {(m['training']['wall_seconds'] or 0) / 60:.1f} train min"
        )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.shared_backbone and not args.shared_backbone.is_file():
        parser.error(f"{args.shared_backbone}: no such file")
    if args.after and not args.after.is_file():
        parser.error(f"{args.after}: no such file")
    data_root = data_root_or_none()
    if data_root is None:
        print(NO_DATA)
        return 0
    workdir, stamp = bench_workdir(args.name)
    runs_root = workdir / "runs"
    conf = {"conditions": args.condition, "profiles": args.profile, "epochs": args.epochs}
    if args.budget is not None:
        conf["budget_minutes"] = args.budget
    backbone = (
        place_shared_backbone(args.shared_backbone, RegistryLayout(workdir / "registry"))
        if args.shared_backbone
        else None
    )
    registry, after = earlier_night(args.after) if args.after else (None, None)
    print(f"{args.name}: DAG run under the scheduler, work in {workdir}", flush=True)
    run = scheduler_run(
        workdir,
        medcore_env(Path(args.config), data_root, workdir, registry),
        conf,
        run_id=f"bench_{args.name}_{stamp}",
    )
    models = model_rows(runs_root, run["run_id"])
    path = write_result(
        args.name,
        {
            "config": os.path.relpath(Path(args.config).resolve(), ROOT),
            "data_root": str(data_root),
            "conf": conf,
            "run": run,
            "models": models,
            "shared_backbone": backbone,
            "after": after,
            "ensembles": ensemble_rows(runs_root, run["run_id"]),
            "night": night_plan_against_actual(runs_root / run["run_id"]),
            "run_folder": str((runs_root / run["run_id"]).relative_to(ROOT)),
        },
    )
    shutil.rmtree(workdir / "airflow_home", ignore_errors=True)  # keep the run folder, not a dead metadata DB
    _print_summary(run, models, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
