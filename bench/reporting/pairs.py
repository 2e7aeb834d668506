"""The pipeline against plain Keras in pairs of fresh processes, by wall clock and per CPU-second."""

from __future__ import annotations

from typing import Any

from bench.reporting.common import _load_lines, _median_of, _rate, _seconds, _spread

# Issue 16: the pipeline keeps at least this share of a plain `model.fit`'s speed at every shipped size.
PAIR_TARGET = 0.95


def pair_verdict(low: float, high: float, pairs: int, target: float = PAIR_TARGET) -> str:
    """Judge the target on the spread of the pair ratios: only a spread wholly on one side of it decides."""
    if pairs < 2:
        return "not judged (one pair has no spread)"
    if low >= target:
        return "met"
    if high < target:
        return "missed"
    return "noise exceeds the margin"


def pairs_table(tp: dict[str, Any], name: str = "train_pairs") -> str:
    """Pipeline / plain from pairs of fresh processes (bench/train_throughput.py --pairs): ratio, spread, verdict."""
    sizes = sorted(tp["sizes"].items(), key=lambda kv: int(kv[0]))
    cache = tp.get("primitive_cache_capacity")
    lines = [
        f"From `bench/results/{name}.json` (`{tp['command']}`): at each size, {tp['pairs']} pairs of runs, each run a "
        f"fresh process training {tp['epochs']} epochs; a pair is the pipeline (`medcore.model.training.train_model`: "
        "tf.data from files, callbacks, checkpoints) and a plain `model.fit` on the same images as in-memory "
        "tensors, same model, precision and batch, "
        + (
            "started at once and running side by side, as two one-slot trainings share the machine in a night. "
            if tp.get("together")
            else "one after the other, the order alternating from pair to pair. "
        )
        + "A run's speed is the median of its epochs after the first (the trace); a pair's ratio is its pipeline "
        "run over its plain run. Threads per run: "
        + (
            f"{tp['threads']} (`MEDCORE_THREADS`, as a task holding {tp['threads']} `training` pool slot(s) gets "
            "in a night)"
            + (f", inter-op {tp['inter_threads']} (`MEDCORE_INTER_THREADS`). " if tp.get("inter_threads") else ". ")
            if tp.get("threads")
            else "TensorFlow's default pools (every core). "
        )
        + "ONEDNN_PRIMITIVE_CACHE_CAPACITY: "
        + (f"{cache}." if cache else "unset (oneDNN's default, 1024).")
        + (f" **{tp['note']}**" if tp.get("note") else ""),
        "",
        "| size | precision | images × epochs | pipeline img/s (runs min–max) | plain img/s (runs min–max) "
        "| pipeline / plain: median (pairs min–max) | pairs | ≥ 0.95 | train steps only: median (min–max) "
        "| pipeline epoch s: train + val + callbacks | plain epoch s: train + val |",
        "|--:|---|--:|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    verdicts = {}
    for size, r in sizes:
        verdicts[int(size)] = verdict = pair_verdict(r["ratio_min"], r["ratio_max"], r["n_pairs"])
        pipe, plain = r["epoch_parts"]["pipeline"], r["epoch_parts"]["plain"]
        precision = f"`{r['mode']}`" + (" + fused BN" if r.get("fused_batch_norm") else "")
        lines.append(
            f"| {size} px | {precision} | {r['images']} × {tp['epochs']} | {_rate(r['pipeline'])} | {_rate(r['plain'])} "
            f"| **{r['ratio']:.3f}** ({r['ratio_min']:.3f}–{r['ratio_max']:.3f}) | {r['n_pairs']} | {verdict} "
            f"| {_spread(r.get('train_ratio'), r.get('train_ratio_min'), r.get('train_ratio_max'))} "
            f"| {_seconds(pipe['epoch_seconds'])}: {_seconds(pipe['train_seconds'])} + "
            f"{_seconds(pipe['validation_seconds'])} + {_seconds(pipe['callbacks_seconds'])} "
            f"| {_seconds(plain['epoch_seconds'])}: {_seconds(plain['train_seconds'])} + "
            f"{_seconds(plain['validation_seconds'])} |"
        )
    shipped = tp.get("shipped_sizes") or []
    unmeasured = [s for s in shipped if s not in verdicts]
    judged = {s: v for s, v in verdicts.items() if s in shipped} if shipped else verdicts
    if any(v == "missed" for v in judged.values()):
        overall = "missed at " + ", ".join(f"{s} px" for s, v in judged.items() if v == "missed")
    elif unmeasured or not judged or any(v != "met" for v in judged.values()):
        open_sizes = [f"{s} px" for s, v in judged.items() if v != "met"] + [
            f"{s} px (not measured)" for s in unmeasured
        ]
        overall = "not shown: " + ", ".join(open_sizes)
    else:
        overall = "met"
    orders = "; ".join(
        f"{size} px {' / '.join(f'{k} {v:.3f}' for k, v in r['ratio_by_order'].items() if v is not None)}"
        for size, r in sizes
    )
    lines += [
        "",
        f"Target pipeline / plain ≥ {PAIR_TARGET:.2f} at every shipped size "
        f"({', '.join(f'{s} px' for s in shipped) or 'not recorded'}): **{overall}**. A size meets it when every "
        "pair's ratio is at least 0.95, misses it when every pair's ratio is below, and otherwise the spread of the "
        "pairs (their noise) is wider than the median's margin to 0.95, so the run does not decide. "
        "Epoch seconds are medians of the steady epochs: train steps, validation (the same val images on both sides) "
        "and, for the pipeline, its epoch-end callbacks (CSV log, best-epoch weights, BackupAndRestore's "
        "checkpoint), which cost the same per epoch however many images it holds, so their share here "
        'is larger than in a night whose epochs hold more images; "train steps only" is each pair\'s ratio '
        "over the train steps alone, without them. Median ratio by which side ran first (drift would "
        f"separate them): {orders}.",
    ]
    lines += _cpu_pairs_lines(sizes, shipped)
    lines += _load_lines(tp, f"wall time {(tp.get('wall_seconds') or 0) / 60:.0f} min")
    return "\n".join(lines) + "\n"


def _cpu_pairs_lines(sizes: list[tuple[str, dict[str, Any]]], shipped: list[int]) -> list[str]:
    """The same pairs per CPU-second of each process, where the runs recorded their CPU time."""
    rows = [(size, r) for size, r in sizes if r.get("cpu_ratio") is not None]
    if not rows:
        return []

    def share(parts: dict[str, Any]) -> str:
        cpu, wall = parts.get("cpu_seconds"), parts.get("epoch_seconds")
        return f"{cpu / wall:.0%}" if cpu and wall else "–"

    lines = [
        "",
        "The same pairs per CPU-second: each run's images over its own process's CPU seconds (every thread, "
        "tf.data's included) from one epoch's start to the next, so what the pipeline computes beyond the plain "
        "fit counts and time a run spent off the CPU does not. CPU share is a run's CPU seconds over its "
        "wall seconds per epoch (medians of steady epochs); idle and steal are the whole machine's shares of "
        "CPU time over the same epochs, from /proc/stat (steal: time the host kept this VM's vCPUs).",
        "",
        "| size | pipeline img per CPU-s | plain img per CPU-s | pipeline / plain per CPU-second: median (pairs "
        "min–max) | ≥ 0.95 | CPU share of wall: pipeline / plain | machine idle | machine steal |",
        "|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    verdicts = {}
    for size, r in rows:
        verdicts[int(size)] = verdict = pair_verdict(r["cpu_ratio_min"], r["cpu_ratio_max"], r["n_pairs"])
        pipe, plain = r["epoch_parts"]["pipeline"], r["epoch_parts"]["plain"]
        idle = _median_of([pipe.get("machine_idle"), plain.get("machine_idle")])
        steal = _median_of([pipe.get("machine_steal"), plain.get("machine_steal")])
        lines.append(
            f"| {size} px | {r['pipeline'].get('images_per_cpu_second', 0):.1f} "
            f"| {r['plain'].get('images_per_cpu_second', 0):.1f} "
            f"| **{r['cpu_ratio']:.3f}** ({r['cpu_ratio_min']:.3f}–{r['cpu_ratio_max']:.3f}) | {verdict} "
            f"| {share(pipe)} / {share(plain)} "
            f"| {'–' if idle is None else f'{idle:.0%}'} | {'–' if steal is None else f'{steal:.1%}'} |"
        )
    judged = [s for s in (shipped or verdicts) if s in verdicts]
    missing = [s for s in shipped if s not in verdicts]
    met = [s for s in judged if verdicts[s] == "met"]
    lines += [
        "",
        f"Per CPU-second, pipeline / plain ≥ {PAIR_TARGET:.2f}: "
        + (
            "**met at every shipped size**."
            if judged and len(met) == len(judged) and not missing
            else "**"
            + "; ".join([f"{s} px {verdicts[s]}" for s in judged] + [f"{s} px not measured" for s in missing])
            + "**."
        ),
    ]
    return lines
