"""Machines, where a training step spends its time, AMX, the other stages' speed and Grad-CAM's deletion test."""

from __future__ import annotations

from typing import Any

from bench.reporting.common import _cpu_id, _missing
from bench.reporting.throughput import throughput_tables

AMX_RESULTS = ("peak_amx", "train_throughput_amx", "precision_profile_amx")
WIDEST = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")  # a machine's widest vector extension names it


def machine_lines(loaded: dict[str, dict[str, Any] | None]) -> list[str]:
    """One line per CPU the loaded results were measured on, naming the results measured there."""
    by_machine: dict[tuple[str, str | None, tuple[str, ...]], tuple[dict[str, Any], list[str]]] = {}
    for name, result in loaded.items():
        m = (result or {}).get("machine")
        if m:
            by_machine.setdefault((m["cpu"], m.get("cpu_id"), tuple(m["flags"])), (m, []))[1].append(name)
    label = "Machine" if len(by_machine) == 1 else "Machines"
    return [
        f"- **{label}**: {m['cpu']}{_cpu_id(m)}, {m['cores']} cores, no GPU, "
        f"{next((f for f in WIDEST if f in m['flags']), 'no AVX2')}"
        + ("" if len(by_machine) == 1 else f"; measured here: {', '.join(names)}")
        for m, names in by_machine.values()
    ]


def amx_section(loaded: dict[str, dict[str, Any] | None]) -> str:
    """Precisions and the kernel profile, from the results measured on an AMX machine (peak_amx: in its JSON)."""
    peak, tp, prof = (loaded[name] for name in AMX_RESULTS)
    cpu = next(r["machine"]["cpu"] for r in (peak, tp, prof) if r)
    parts = [f"Measured on {cpu} (AMX), one session; compare these with each other only.\n"]
    parts.append(throughput_tables(tp, threads=False) if tp else _missing("train_throughput_amx"))
    parts.append(precision_profile_table(prof) if prof else _missing("precision_profile_amx"))
    return "\n".join(parts)


def op_ms_by_category(row: dict[str, Any]) -> dict[str, float]:
    """A profiled variant's op time by kind, without the executor's container events.

    Results written before bench/precision_profile.py skipped them counted `Process` (which spans every op it
    runs) under "other"; its total is in `top_ops`, so it is taken back out here.
    """
    from bench.precision_profile import CONTAINER_OPS

    cats = dict(row.get("ms_by_category") or {})
    counted = sum(op["ms"] for op in row.get("top_ops", []) if op["op"] in CONTAINER_OPS)
    if counted and cats.get("other", 0) >= counted:
        cats["other"] -= counted
    return cats


def _base_isas(isas: list[str]) -> list[str]:
    """oneDNN's ISAs without the per-kernel variants (`x+brg_conv_fwd:x`), `gemm:jit` and `uni`."""
    return [i for i in isas if "+" not in i and ":" not in i and i != "uni"]


def precision_profile_table(prof: dict[str, Any]) -> str:
    from bench.precision_profile import CATEGORIES

    lines = [
        f"Op time by kind, {prof['size']} px, batch {prof['batch']}, {prof['steps']} profiled steps "
        "(`bench/precision_profile.py`):",
        "",
        "| variant | img/s (profiled) | oneDNN ISA | " + " | ".join(CATEGORIES) + " |",
        "|---|--:|---|" + "--:|" * len(CATEGORIES),
    ]
    for name, row in prof["variants"].items():
        cats = op_ms_by_category(row)
        total = sum(cats.values()) or 1
        lines.append(
            f"| `{name}` | {row['images_per_second']:.1f} | {', '.join(_base_isas(row['onednn']['isas'])) or '–'} | "
            + " | ".join(f"{cats.get(c, 0) / total:.0%}" for c in CATEGORIES)
            + " |"
        )
    return "\n".join(lines) + "\n"


def deletion_baselines_table(result: dict[str, Any]) -> str:
    """Grad-CAM's deletion test on a night's models under each fill: what the fill removes, and the verdict."""
    s = result["settings"]
    lines = [
        f"The deletion test rerun per fill on `{result['run_folder']}`: top {s['deletion_images']} test images, "
        f"{s['deletion_steps']} steps, {s['random_maps']} random maps each, seed {s['seed']}; mean logits; "
        f"one-sided paired Wilcoxon, level {s['alpha']}.",
        "",
        "| model | map | fill | logit intact → all deleted | Grad-CAM area | random area | Grad-CAM wins | p | verdict |",
        "|---|---|---|---|--:|--:|--:|--:|---|",
    ]
    for m in result["models"]:
        for fill in ("blur", "mean"):
            row = m.get(fill)
            if not row:
                continue
            lines.append(
                f"| {m['condition']} {m['profile']} | {'×'.join(map(str, m['map_shape']))} | {fill} "
                f"| {row['intact_logit']:.2f} → {row['deleted_logit']:.2f} | {row['gradcam_deletion_auc']:.2f} "
                f"| {row['random_deletion_auc']:.2f} | {row['images_gradcam_better']}/{m['images']} "
                f"| {row['p_value']:.2g} | {'beats random' if row['better_than_random'] else 'not evidence'} |"
            )
    return "\n".join(lines) + "\n"


def stages_table(stages: dict[str, Any] | None, validate: dict[str, Any] | None) -> str:
    lines = []
    if stages:
        lines += [
            "| size | inference img/s | Grad-CAM img/s | Grad-CAM first call |",
            "|--:|--:|--:|--:|",
        ]
        for size, row in sorted(stages["sizes"].items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {size} px | {row['inference_images_per_second']:.1f} | {row['gradcam_images_per_second']:.1f} "
                f"| {row['gradcam_first_call_seconds']:.1f} s |"
            )
        lines += [
            "",
            f"Inference (`predict_files`, decode included) on {stages['inference_source']}; Grad-CAM on `relu`, "
            "batches of 32.",
            "",
        ]
    else:
        lines.append(_missing("stages_speed"))
    if validate:
        full = validate["full"]
        lines.append(
            f"Validation ({validate['condition']}, {full['images']} images): {validate['images_per_second']:.0f} "
            f"img/s on {validate['cpus']} CPUs, peak RSS {full['peak_mb']:.0f} MB, half the set "
            f"{validate['half']['peak_mb']:.0f} MB."
        )
    else:
        lines.append(_missing("validate_speed"))
    return "\n".join(lines) + "\n"
