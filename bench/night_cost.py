"""What the shipped cold night costs on each CPU kind measured, and how well the night planner predicts nights.

From recorded figures only (no training here): the nights in bench/results and the AVX2-only EPYC's
training record. For each CPU kind it gives the planner's prediction of the full shipped cold night
(`conditions.yaml`, every condition from scratch), the measured night where one exists, and the plan the
planner makes for the 240-min budget with what it cuts. Then a backtest of the planner's per-chain
prediction on each recorded night:
- leave one out: each chain predicted from the speed and stage timings of the night's *other* chains;
- across nights: the following night (`nightly_following.json`) predicted from the cold night before it
  on the same machine kind (`nightly.json`), as the planner would have done that evening.

    .venv/bin/python bench/night_cost.py [--out night_cost]      # writes bench/results/<out>.json, prints tables
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medcore.nights.budget import Chain, Speed, fit_night, pack, predict_chain, speed_from_records  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STAGES = ("validate", "train", "evaluate", "gradcam")
BUDGET = 240.0
SLOTS = 2  # every recorded night ran on 2 cores, one training per pool slot


def _seconds(task: dict[str, Any]) -> float:
    start, end = (dt.datetime.fromisoformat(task[k]) for k in ("start", "end"))
    return (end - start).total_seconds()


def recorded_night(name: str) -> dict[str, Any]:
    """A bench/nightly.py result as the planner sees a night: a training record and stage seconds per chain."""
    result = json.loads((RESULTS / name).read_text())
    tasks = {(t["task_id"].split(".")[-1], t["map_index"]): t for t in result["run"]["tasks"]}
    chains = []
    for index, model in enumerate(result["models"]):
        stages = {s: _seconds(tasks[(s, index)]) for s in STAGES if (s, index) in tasks}
        chains.append(
            {
                "condition": model["condition"],
                "profile": model["profile"],
                "mode": model.get("mode") or "retrain",
                "crossval": model.get("estimate") == "cross-validation",
                "test_images": (model.get("test") or {}).get("n") or 0,
                "training": model["training"],
                "stages": stages,
                "tries": max(tasks[(s, index)]["tries"] for s in STAGES if (s, index) in tasks),
            }
        )
    return {
        "name": name,
        "machine": result["machine"],
        "minutes": result["run"]["wall_seconds"] / 60.0,
        "date": result["machine"]["date"][:10],
        "chains": chains,
        "note": result.get("note"),
    }


def night_speed(night: dict[str, Any], leave_out: tuple[str, str] | None = None) -> Speed:
    """The planner's speed from a recorded night's chains (optionally without one of them)."""
    kept = [c for c in night["chains"] if (c["condition"], c["profile"]) != leave_out]
    # A cross-validated chain's train task is 11 trainings; its record is only the last: its timing says nothing
    # of one training's speed, but its fixed stages do.
    speed = speed_from_records(
        [c["training"] for c in kept],
        cpu_label(night["machine"]),
        night["name"],
        [
            {
                "condition": c["condition"],
                "profile": c["profile"],
                "mode": c["mode"],
                "training_seconds": c["training"]["wall_seconds"],
                "crossval": c["crossval"],
                **c["stages"],
            }
            for c in kept
        ],
    )
    assert speed is not None, night["name"]
    return speed


def cpu_label(machine: dict[str, Any]) -> str:
    flags = machine.get("flags") or []
    kind = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "AVX2"
    return f"{machine['cpu']}{' (' + machine['cpu_id'] + ')' if machine.get('cpu_id') else ''}, {kind}"


def chain_of(c: dict[str, Any], epochs: int | None = None) -> Chain:
    t = c["training"]
    return Chain(
        condition=c["condition"],
        profile=c["profile"],
        image_size=int(t["image_size"]),
        epochs=int(epochs or t["epochs_run"]),
        train_images=int(t["train_images"]),
        test_images=int(c["test_images"]),
        mode=c["mode"],
        crossval_trainings=10 if c["crossval"] else 0,  # the shipped 2 x 5-fold
        min_epochs=max(1, -(-int(epochs or t["epochs_planned"]) // 2)),
    )


def actual_minutes(c: dict[str, Any]) -> float:
    return sum(c["stages"].values()) / 60.0


def backtest(night: dict[str, Any], speed_of: Any) -> dict[str, Any]:
    """Predicted against actual minutes per chain and for the night; `speed_of(chain)` gives the speed to use."""
    rows = []
    for c in night["chains"]:
        speed = speed_of(c)
        predicted = predict_chain(chain_of(c), speed)["total"]
        actual = actual_minutes(c)
        rows.append(
            {
                "chain": f"{c['condition']}/{c['profile']}",
                "predicted": round(predicted, 1),
                "actual": round(actual, 1),
                "error": round(predicted / actual - 1, 3),
                "retried": c["tries"] > 1,
            }
        )
    makespan, _ = pack([(c["condition"] + c["profile"], predict_chain(chain_of(c), speed_of(c)), 1)
                        for c in night["chains"]], SLOTS)  # fmt: skip
    return {
        "night": night["name"],
        "cpu": cpu_label(night["machine"]),
        "chains": rows,
        "worst_abs_error": max(abs(r["error"]) for r in rows),
        "night_predicted": round(makespan, 1),
        "night_actual": round(night["minutes"], 1),
        "night_error": round(makespan / night["minutes"] - 1, 3),
    }


def avx2_speed(reference: dict[str, Any]) -> tuple[Speed, str]:
    """The AVX2-only EPYC (family 23): one measured training; the other stages scaled from a measured night."""
    result = json.loads((RESULTS / "nights30_s7_retrain_last.json").read_text())
    run = result["policies"]["retrain"]["nights"][0]["conditions"]["pneumonia"]["profiles"]["standard"]
    per = run["train_minutes"] * 60.0 / (run["epochs_run"] * run["train_images"])
    ref = night_speed(reference)
    ratio = per / ref.per_image_epoch(128)
    # Fixed stage seconds scale with the training speed: an upper bound (bootstrap and I/O do not slow with the ISA).
    source = (
        "nights30_s7_retrain_last.json: pneumonia/standard, 6 epochs of 1,098 images, train_minutes 37.4 "
        "(start-up included), another training beside it; 160 px scaled by pixels; other stages: "
        f"{reference['name']}'s x {ratio:.1f}"
    )
    return _scaled(ref, per, ratio, cpu_label(result["machine"]), source), result["machine"]["date"][:10]


def _scaled(ref: Speed, per: float, ratio: float, cpu_id: str, source: str) -> Speed:
    """`ref`'s night at another training speed `per` (s per image-epoch at 128 px): every stage but validate
    (file reading) slows by `ratio`."""
    return Speed(
        cpu_id=cpu_id,
        source=source,
        seconds_per_image_epoch={128: per},
        startup_seconds=ref.startup_seconds * ratio,
        validate_seconds=ref.validate_seconds,
        evaluate_seconds=ref.evaluate_seconds * ratio,
        gradcam_seconds=ref.gradcam_seconds * ratio,
        train_task_seconds=ref.train_task_seconds,
        measured={k: {s: v * (1 if s == "validate" else ratio) for s, v in m.items()} for k, m in ref.measured.items()},
    )


# Measured nights on AVX2-only CPUs (bench/nightly.py): real CPUs only, not ONEDNN_MAX_CPU_ISA emulations.
AVX2_NIGHTS = ("avx2_standard_b95.json", "avx2_zen3_standard_b90.json")  # b55 is the same CPU: one row is enough


def cost_row(label: str, speed: Speed, shipped: list[Chain], measured: float | None, source: str) -> dict[str, Any]:
    plan = fit_night(shipped, speed, BUDGET, SLOTS)
    return {
        "cpu": label,
        "source": source,
        "seconds_per_image_epoch_128": round(speed.per_image_epoch(128), 4),
        "seconds_per_image_epoch_160": round(speed.per_image_epoch(160), 4),
        "full_night_predicted": round(plan.full_plan_minutes, 1),
        "full_night_measured": round(measured, 1) if measured else None,
        "planned_for_240": round(plan.predicted_minutes, 1),
        "cuts": [f"{c.condition}/{c.profile or '*'}: {c.what}" for c in plan.cuts],
        "plan": plan.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="night_cost")
    args = parser.parse_args(argv)

    amx, zen5, following = (recorded_night(n) for n in ("nightly.json", "nightly_amd_20261130.json",
                                                       "nightly_following.json"))  # fmt: skip
    # The shipped cold night: the chains as the cold nights trained them (same data, same split, same epochs).
    shipped = [chain_of(c) for c in amx["chains"]]
    avx2, avx2_date = avx2_speed(zen5)
    rows = [
        cost_row(cpu_label(n["machine"]), night_speed(n), shipped, n["minutes"], f"{n['name']} ({n['date']})")
        for n in (amx, zen5)
    ]
    rows.append(cost_row(avx2.cpu_id, avx2, shipped, None, f"{avx2.source} ({avx2_date})"))
    avx2_nights = [recorded_night(n) for n in AVX2_NIGHTS if (RESULTS / n).is_file()]
    for night in avx2_nights:  # the shipped night at the speed a real AVX2 night measured (5 standard chains)
        rows.append(cost_row(cpu_label(night["machine"]), night_speed(night), shipped, None,
                             f"{night['name']} ({night['date']}), its own chains' speed"))  # fmt: skip
    tests = [
        {**backtest(n, lambda c, n=n: night_speed(n, (c["condition"], c["profile"]))), "kind": "leave one out"}
        for n in (amx, zen5, following, *avx2_nights)
    ]
    cold = night_speed(amx)
    tests.append({**backtest(following, lambda c: cold), "kind": f"from {amx['name']} (the evening before)"})
    out = {"benchmark": "night_cost", "budget_minutes": BUDGET, "slots": SLOTS, "rows": rows, "backtests": tests}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1) + "\n")

    print("| CPU | source | s per image-epoch 128 / 160 px | shipped cold night, predicted | measured "
          "| planned for 240 min | cuts |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cuts = "; ".join(r["cuts"]) or "none"
        measured = f"{r['full_night_measured']} min" if r["full_night_measured"] else "not measured"
        print(f"| {r['cpu']} | {r['source']} | {r['seconds_per_image_epoch_128']} / {r['seconds_per_image_epoch_160']} "
              f"| {r['full_night_predicted']} min | {measured} | {r['planned_for_240']} min | {cuts} |")  # fmt: skip
    print()
    for t in tests:
        worst = max(t["chains"], key=lambda r: abs(r["error"]))
        print(f"{t['night']} ({t['kind']}): night {t['night_predicted']} predicted / {t['night_actual']} actual "
              f"({t['night_error']:+.1%}); per chain worst {worst['chain']} {worst['error']:+.1%}")  # fmt: skip
        for r in t["chains"]:
            print(f"    {r['chain']}: {r['predicted']} / {r['actual']} min ({r['error']:+.1%})"
                  + (" retried" if r["retried"] else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
