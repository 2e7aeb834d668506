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


def _pairs_intro(tp: dict[str, Any], name: str) -> str:
    """What one pairs file measured: pairs, epochs, side by side or in turn, threads, oneDNN's cache."""
    cache = tp.get("primitive_cache_capacity")
    threads = (
        f"{tp['threads']} (`MEDCORE_THREADS`, as a task holding {tp['threads']} `training` pool slot(s) gets in a night)"
        + (f", inter-op {tp['inter_threads']} (`MEDCORE_INTER_THREADS`). " if tp.get("inter_threads") else ". ")
        if tp.get("threads")
        else "TensorFlow's default pools (every core). "
    )
    return (
        f"`{name}.json`: {tp['pairs']} pairs of fresh processes per size, "
        f"{tp['epochs']} epochs each, the pipeline (`train_model`) against plain "
        "`model.fit` on in-memory tensors, "
        + ("side by side, as two one-slot trainings in a night. " if tp.get("together") else "in turn. ")
        + "Threads per run: "
        + threads
        + "ONEDNN_PRIMITIVE_CACHE_CAPACITY: "
        + (f"{cache}." if cache else "unset (oneDNN's default, 1024).")
        + (f" **{tp['note']}**" if tp.get("note") else "")
    )


def _pairs_row(size: str, r: dict[str, Any], epochs: int, verdict: str) -> str:
    pipe, plain = r["epoch_parts"]["pipeline"], r["epoch_parts"]["plain"]
    precision = f"`{r['mode']}`" + (" + fused BN" if r.get("fused_batch_norm") else "")
    return (
        f"| {size} px | {precision} | {r['images']} × {epochs} | {_rate(r['pipeline'])} | {_rate(r['plain'])} "
        f"| **{r['ratio']:.3f}** ({r['ratio_min']:.3f}–{r['ratio_max']:.3f}) | {r['n_pairs']} | {verdict} "
        f"| {_spread(r.get('train_ratio'), r.get('train_ratio_min'), r.get('train_ratio_max'))} "
        f"| {_seconds(pipe['epoch_seconds'])}: {_seconds(pipe['train_seconds'])} + "
        f"{_seconds(pipe['validation_seconds'])} + {_seconds(pipe['callbacks_seconds'])} "
        f"| {_seconds(plain['epoch_seconds'])}: {_seconds(plain['train_seconds'])} + "
        f"{_seconds(plain['validation_seconds'])} |"
    )


def pairs_overall(verdicts: dict[int, str], shipped: list[int]) -> str:
    """met, missed at some shipped size, or not shown (a size's noise spans the target, or it was not measured)."""
    unmeasured = [s for s in shipped if s not in verdicts]
    judged = {s: v for s, v in verdicts.items() if s in shipped} if shipped else verdicts
    if any(v == "missed" for v in judged.values()):
        return "missed at " + ", ".join(f"{s} px" for s, v in judged.items() if v == "missed")
    if unmeasured or not judged or any(v != "met" for v in judged.values()):
        open_sizes = [f"{s} px" for s, v in judged.items() if v != "met"]
        return "not shown: " + ", ".join(open_sizes + [f"{s} px (not measured)" for s in unmeasured])
    return "met"


def pairs_table(tp: dict[str, Any], name: str = "train_pairs") -> str:
    """Pipeline / plain from pairs of fresh processes (bench/train_throughput.py --pairs): ratio, spread, verdict."""
    sizes = sorted(tp["sizes"].items(), key=lambda kv: int(kv[0]))
    lines = [
        _pairs_intro(tp, name),
        "",
        "| size | precision | images × epochs | pipeline img/s | plain img/s | pipeline / plain (pairs min–max) "
        "| pairs | ≥ 0.95 | train steps only | pipeline epoch s: train + val + callbacks | plain epoch s: train + val |",
        "|--:|---|--:|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    verdicts = {}
    for size, r in sizes:
        verdicts[int(size)] = verdict = pair_verdict(r["ratio_min"], r["ratio_max"], r["n_pairs"])
        lines.append(_pairs_row(size, r, tp["epochs"], verdict))
    shipped = tp.get("shipped_sizes") or []
    orders = "; ".join(
        f"{size} px {' / '.join(f'{k} {v:.3f}' for k, v in r['ratio_by_order'].items() if v is not None)}"
        for size, r in sizes
    )
    lines += [
        "",
        f"Target pipeline / plain ≥ {PAIR_TARGET:.2f} at every shipped size "
        f"({', '.join(f'{s} px' for s in shipped) or 'not recorded'}): **{pairs_overall(verdicts, shipped)}** "
        "(met: every pair ≥ 0.95; missed: every pair below). Median ratio by which side ran first: "
        f"{orders}.",
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
        "Per CPU-second of each run's own process; idle and steal: the whole machine's.",
        "",
        "| size | pipeline img/CPU-s | plain img/CPU-s | ratio per CPU-s (pairs min–max) | ≥ 0.95 "
        "| CPU / wall: pipeline / plain | idle | steal |",
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
