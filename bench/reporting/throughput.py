"""Training throughput: the pipeline against plain Keras, precisions, threads and the matmul ceiling."""

from __future__ import annotations

from typing import Any

from bench.reporting.common import _load_lines, _missing, _num, _rate, _share


def throughput_table(tp: dict[str, Any]) -> str:
    lines = [
        "| size | pipeline img/s | plain `model.fit` img/s | ratio | mixed_bfloat16 img/s (plain) "
        "| 1 task × 2 threads | 2 tasks × 1 thread (sum) | first step, pipeline / plain |",
        "|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for size, row in sorted(tp["sizes"].items(), key=lambda kv: int(kv[0])):
        bf16 = (row.get("plain_bf16") or {}).get("steady_images_per_second")
        lines.append(
            f"| {size} px | {row['pipeline']['steady_images_per_second']:.1f} | {row['plain']['steady_images_per_second']:.1f} "
            f"| **{row['ratio']:.3f}** | {_num(bf16, 1)} | {_num(row.get('one_task_2_threads'), 1)} "
            f"| {_num(row.get('two_tasks_1_thread'), 1)} | {row['pipeline']['seconds_to_first_step']:.0f} s / "
            f"{row['plain']['seconds_to_first_step']:.0f} s |"
        )
    worst = min(r["ratio"] for r in tp["sizes"].values())
    lines += [
        "",
        f"Target ratio ≥ 0.90: {'met' if worst >= 0.90 else 'missed'} (worst size {worst:.3f}). "
        f"{tp['images']} real pneumonia training images, {tp['epochs']} epochs, steady state = median epoch "
        "after the first; the pipeline reads files through tf.data with every callback on, the plain fit "
        "gets the same images as in-memory tensors.",
    ]
    return "\n".join(lines) + "\n"


def ceiling_lines(peak: dict[str, Any] | None) -> str:
    if not peak:
        return _missing("peak")
    p = peak["peak"]
    flops = ", ".join(
        f"{size} px {f / 1e9:.2f}"
        for size, f in sorted(peak["training_flops_per_image"].items(), key=lambda kv: int(kv[0]))
    )
    return (
        f"Ceiling (`bench/peak.py`): matmul peak {p['float32']['gflops']:.0f} GFLOP/s in float32 and "
        f"{p['bfloat16']['gflops']:.0f} GFLOP/s in bfloat16 ({p['float32']['matrix']}² matrices, all threads). "
        f"DenseNet121 training GFLOP per image ({peak['training_factor']:.0f} × the forward pass that "
        f'TensorFlow\'s cost model counts): {flops}. "share of peak" below is img/s × GFLOP per image ÷ the '
        "float32 peak.\n"
    )


def _peak_share(rate: float, size: Any, peak: dict[str, Any] | None) -> float | None:
    """Training FLOP/s at `rate` img/s as a share of the float32 matmul peak in peak.json (read now, not at run)."""
    per_image = ((peak or {}).get("training_flops_per_image") or {}).get(str(size))
    top = ((peak or {}).get("peak") or {}).get("float32", {}).get("gflops")
    return rate * per_image / (top * 1e9) if per_image and top else None


def throughput_tables(tp: dict[str, Any], peak: dict[str, Any] | None = None) -> str:
    """Pipeline against plain, precisions side by side, threads: all from one train_throughput.json."""
    sizes = sorted(tp["sizes"].items(), key=lambda kv: int(kv[0]))
    main = [(s, r) for s, r in sizes if "pipeline" in r]
    lines = [
        "| size | decode + resize img/s | pipeline img/s (min–max) | plain `model.fit` img/s (min–max) | ratio "
        "| share of FP32 peak (plain) | pipeline first step |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for size, r in main:
        pipe, plain = r["pipeline"]["float32"], r["plain"]["float32"]
        lines.append(
            f"| {size} px | {r['decode']['images_per_second']:.0f} | {_rate(pipe)} | {_rate(plain)} "
            f"| **{r['ratio']:.3f}** (± {r['ratio_noise']:.2f}) "
            f"| {_share(_peak_share(plain['images_per_second'], size, peak))} "
            f"| {_num(pipe.get('seconds_to_first_step'), 0)} s |"
        )
    if main:
        worst = min(r["ratio"] for _, r in main)
        noisy = [s for s, r in main if r["ratio_noise"] > abs(r["ratio"] - 0.95)]
        verdict = "met" if worst >= 0.95 else "missed"
        if noisy:
            verdict += f" as measured, but the noise exceeds the margin at {', '.join(f'{s} px' for s in noisy)}"
        lines += [
            "",
            f"Target pipeline / plain ≥ 0.95 at every size: {verdict} "
            f"(worst {worst:.3f}). Both in float32 with TensorFlow's default threads. The pipeline is "
            "`medcore.model.training.train_model` reading files through tf.data with every callback (checkpoints "
            "included); plain is `model.fit` on the same images as in-memory tensors. ± is the larger "
            "relative min–max spread of the two sides' steady epochs.",
            "",
        ]
        lines += _precision_lines(tp, main)
    lines += _thread_lines(sizes)
    lines += _load_lines(tp, f"{tp['rounds']} steady epochs per variant")
    return "\n".join(lines) + "\n"


def _precision_lines(tp: dict[str, Any], main: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Every precision of the plain fit side by side, and the pipeline in another precision."""
    variants = list(dict.fromkeys(v for _, r in main for v in r["plain"]))
    lines = [
        "Precision, plain fit, every variant's model traced first and then taking turns one epoch each "
        "(img/s, min–max, × float32 of the same round):",
        "",
        "| size | " + " | ".join(f"`{v}`" for v in variants) + " |",
        "|--:|" + "--:|" * len(variants),
    ]
    for size, r in main:
        base = r["plain"]["float32"]["images_per_second"]
        cells = [
            f"{_rate(r['plain'][v])} ×{r['plain'][v]['images_per_second'] / base:.2f}" if v in r["plain"] else "–"
            for v in variants
        ]
        lines.append(f"| {size} px | " + " | ".join(cells) + " |")
    extra = [(size, name, row) for size, r in main for name, row in r["pipeline"].items() if name != "float32"]
    if extra:
        lines += [
            "",
            "The pipeline in another precision against today's pipeline (float32), same run, one after "
            "the other (not interleaved, so a change of load between them shows up here):",
            "",
        ]
        for size, name, row in extra:
            base = tp["sizes"][size]["pipeline"]["float32"]["images_per_second"]
            lines.append(
                f"- {size} px: `{name}` {_rate(row)} img/s against {base:.1f}: **×{row['images_per_second'] / base:.2f}**"
            )
    return lines


def _thread_lines(sizes: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Threads: one task against two, plain float32 fit in subprocesses."""
    lines: list[str] = []
    grids = [(s, r["threads"]) for s, r in sizes if r.get("threads")]
    if grids:
        labels = list(grids[0][1])
        lines += [
            "",
            "Threads (plain float32 fit in subprocesses run one after another; two tasks = their summed img/s):",
            "",
            "| size | " + " | ".join(labels) + " |",
            "|--:|" + "--:|" * len(labels),
        ]
        for size, grid in grids:
            lines.append(
                f"| {size} px | "
                + " | ".join(_num(grid[label]["images_per_second"], 1) if label in grid else "–" for label in labels)
                + " |"
            )
    return lines
