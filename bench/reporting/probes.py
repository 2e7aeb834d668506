"""Issue 37's figures on the real sets: what each probe said about a trained model, and border erasing's effect."""

from __future__ import annotations

from typing import Any

from bench.reporting.common import _cpu_id, _num, _with_interval

ARMS = (("shipped", "as shipped"), ("erased", "border erased"))


def _empty(figures: dict[str, Any]) -> str:
    """The empty films' median probabilities against the real positives' median."""
    empty = figures["empty_film"]
    kinds = ", ".join(f"{k} {v:.2f}" for k, v in empty["median_probability"].items())
    return f"{kinds} (real + {_num(empty['real_positive_median'], 2)}, − {_num(empty['real_negative_median'], 2)})"


def _border(figures: dict[str, Any]) -> str:
    border = figures["border"]
    if not border.get("roc_auc"):
        return "–"
    auc = border["roc_auc"]
    share = border.get("border_share") or {}
    return (
        f"border {_with_interval(auc['border']['value'], auc['border'])}, "
        f"centre {_with_interval(auc['centre']['value'], auc['centre'])}; "
        f"border keeps {_with_interval(share.get('value'), share)} ({border['images']} images)"
    )


def _sanity(figures: dict[str, Any]) -> str:
    stages = figures["sanity"]["stages"]
    return ", ".join(f"{s['stage']} {_num(s['spearman_median'], 2)}" for s in stages) or "–"


def probes_rows(result: dict[str, Any]) -> list[str]:
    """One row per trained model and arm: test AUC, the three probes' figures, which findings fired."""
    rows = [
        "| model | training | test ROC AUC | empty film: median P(positive) | border vs centre ROC AUC | "
        "maps vs randomised (median Spearman) | findings |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in result["models"]:
        for arm, words in ARMS:
            if arm not in m:
                continue
            f = m[arm]
            rows.append(
                f"| {m['condition']} {m['profile']} | {words} | {_with_interval(f['test_auc'], f['test_auc_interval'])}"
                f" | {_empty(f)} | {_border(f)} | {_sanity(f)} | {', '.join(f['findings']) or 'none'} |"
            )
    return rows


def erase_lines(result: dict[str, Any]) -> list[str]:
    """The paired test AUC difference border erasing made, per model that has both arms."""
    machine = result["machine"]
    lines = []
    for m in result["models"]:
        d = m.get("erased_minus_shipped")
        if not d:
            continue
        lines.append(
            f"- {m['condition']} {m['profile']}: border erased on {result['erase']:.0%} of training images "
            f"(band {result['band']:.1%} of the side) − as shipped: test ROC AUC {d['delta']:+.3f} "
            f"({d['low']:+.3f} to {d['high']:+.3f}, paired bootstrap over {d['units']} {d['unit']}s, one seed), "
            f"{machine['cpu']}{_cpu_id(machine)}."
        )
    return lines


def probes_section(result: dict[str, Any]) -> str:
    """The detail page's section: the table, the paired effect, and what the figures rest on."""
    out = [*probes_rows(result), "", *erase_lines(result)]
    if result.get("note"):
        out += ["", result["note"]]
    return "\n".join(out) + "\n"
