"""The whole nightly run, orchestration overhead, and what a night costs per CPU kind."""

from __future__ import annotations

from typing import Any

from bench.reporting.common import _missing

# Issue 17's budget on 2 cores: a cold first night (no champions) within 4 hours, a following one within 90 min.
COLD_NIGHT_MINUTES, FOLLOWING_NIGHT_MINUTES = 240, 90


def _night_row(label: str, nightly: dict[str, Any]) -> str:
    run = nightly["run"]
    done = sum(m["status"] == "succeeded" for m in nightly["models"])
    skipped = sum(m["status"] == "skipped" for m in nightly["models"])
    train = sum((m["training"].get("wall_seconds") or 0) for m in nightly["models"])
    modes = sorted({m.get("mode") for m in nightly["models"] if m.get("mode")})
    return (
        f"| {label} | {done}/{len(nightly['models'])} succeeded"
        + (f", {skipped} skipped" if skipped else "")
        + f" | {run['state']} | {run['wall_seconds'] / 60:.1f} min | {run['cpu_busy']:.0%} | {train / 60:.1f} min "
        f"| {', '.join(modes) or '–'} | `{nightly['config']}` |"
    )


def _budget_verdict(label: str, nightly: dict[str, Any], minutes: int) -> str:
    wall = nightly["run"]["wall_seconds"] / 60
    verdict = "met" if wall <= minutes else f"missed by {wall - minutes:.0f} min"
    busy = nightly["run"]["cpu_busy"]
    busy_ok = "met" if busy >= 0.90 else f"missed by {(0.90 - busy) * 100:.0f} points"
    profiles = (nightly.get("conf") or {}).get("profiles") or []
    part = (
        f" It trained only the profile(s) {', '.join(profiles)}, so it is part of a night, not the whole."
        if profiles
        else ""
    )
    return f"{label} within {minutes} min: {verdict}; CPU busy ≥ 90 %: {busy_ok}.{part}"


def nightly_table(nightly: dict[str, Any], following: dict[str, Any] | None = None) -> str:
    lines = [
        "| night | models | state | wall | CPU busy | summed training | mode | config |",
        "|---|---|---|--:|--:|--:|---|---|",
        _night_row("cold (no champions)", nightly),
    ]
    verdicts = [_budget_verdict("A cold night", nightly, COLD_NIGHT_MINUTES)]
    if following:
        after = (following.get("after") or {}).get("run_id", "the cold night")
        lines.append(_night_row(f"following (champions of `{after}`)", following))
        verdicts.append(_budget_verdict("A following night", following, FOLLOWING_NIGHT_MINUTES))
    else:
        verdicts.append(f"A following night: {_missing('nightly_following').strip()}")
    lines += [
        "",
        "Targets: "
        + " ".join(verdicts)
        + f" One DAG run ({nightly['run']['executor']}, {nightly['run']['database']}).",
    ]
    return "\n".join(lines) + "\n"


def overhead_table(overhead: dict[str, Any]) -> str:
    lines = ["| how the same run was executed | wall | ratio to `medcore run` | CPU busy |", "|---|--:|--:|--:|"]
    base = overhead["modes"]["medcore_run"]["wall_seconds"]
    for name, label in (
        ("medcore_run", "`medcore run` (one process, serial)"),
        ("dags_test", "`airflow dags test` (embedded Airflow, serial)"),
        ("scheduler", "DAG run under the scheduler (LocalExecutor, SQLite)"),
    ):
        mode = overhead["modes"].get(name)
        if mode:
            lines.append(
                f"| {label} | {mode['wall_seconds']:.0f} s | **{mode['wall_seconds'] / base:.2f}** "
                f"| {mode['cpu_busy']:.0%} |"
            )
    lines += ["", f"Workload: {overhead['workload']}. Target ratio ≤ 1.10."]
    return "\n".join(lines) + "\n"


def night_cost_tables(result: dict[str, Any]) -> str:
    """bench/night_cost.py: the shipped cold night per CPU kind, and the planner's per-chain backtests."""
    lines = [
        f"From recorded figures only (`bench/night_cost.py`), {result['slots']} cores, budget "
        f"{result['budget_minutes']:.0f} min; *planned*: the night the planner fits into it.",
        "",
        "| CPU | source | s per image-epoch 128 / 160 px | cold night: predicted | measured | planned | cuts |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        measured = f"{r['full_night_measured']} min" if r["full_night_measured"] else "not measured"
        dropped = sum("not trained" in c for c in r["cuts"])
        cuts = f"{len(r['cuts']) - dropped} shortened, {dropped} not trained" if r["cuts"] else "none"
        source = r["source"].split(":")[0].split(" (")[0]
        lines.append(
            f"| {r['cpu']} | {source} | {r['seconds_per_image_epoch_128']} / {r['seconds_per_image_epoch_160']} "
            f"| {r['full_night_predicted']} min | {measured} | {r['planned_for_240']} min | {cuts} |"
        )
    lines += [
        "",
        "The planner's backtests per chain (the night's error: BENCHMARKS.md).",
        "",
        "| night | how | worst chain | chains within 20 % |",
        "|---|---|---|---|",
    ]
    for t in result["backtests"]:
        worst = max(t["chains"], key=lambda r: abs(r["error"]))
        within = sum(abs(r["error"]) <= 0.20 for r in t["chains"])
        lines.append(
            f"| `{t['night']}` | {t['kind']} | {worst['chain']} {worst['error']:+.1%} | {within} of {len(t['chains'])} |"
        )
    return "\n".join(lines) + "\n"
