"""Training throughput: the pipeline against plain Keras, precisions and threads."""

from __future__ import annotations

from typing import Any

from bench.reporting.common import _load_lines, _num, _rate


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


def throughput_tables(tp: dict[str, Any], threads: bool = True) -> str:
    """The pipeline in bf16 against float32, and threads: from one train_throughput.json. The single-process
    pipeline / plain ratios and the plain fit's precisions are superseded (docs/decisions/0005, 0006) and stay
    in the JSON file."""
    sizes = sorted(tp["sizes"].items(), key=lambda kv: int(kv[0]))
    main = [(s, r) for s, r in sizes if "pipeline" in r]
    lines = _precision_lines(tp, main) if main else []
    if threads:  # docs/decisions/0007 rests on one machine's grid; another's stays in its JSON file
        lines += _thread_lines(sizes)
        lines += _load_lines(tp, f"{tp['rounds']} steady epochs per variant")
    return "\n".join(lines) + "\n"


def _precision_lines(tp: dict[str, Any], main: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The pipeline in another precision against the pipeline in float32."""
    extra = [(size, name, row) for size, r in main for name, row in r["pipeline"].items() if name != "float32"]
    lines = ["The pipeline in another precision against float32, same run, one after the other:", ""] if extra else []
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
            "Threads (plain float32 fit, img/s; two tasks: summed):",
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
