"""The trend: one row per night and condition (the registry writes it), its CSV text and its plot."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

__all__ = ["TREND_COLUMNS", "render_trend", "trend_csv"]

TREND_COLUMNS = [
    "night",
    "run_id",
    "decision",
    "policy",
    "mode",
    "candidate",
    "selection_split",
    "test_split",
    "challenger_selection_auc",
    "challenger_selection_low",
    "challenger_selection_high",
    "champion_selection_auc",
    "champion_selection_low",
    "champion_selection_high",
    "paired_selection_low",
    "paired_selection_high",
    "best_selection_auc",
    "challenger_test_auc",
    "challenger_test_low",
    "challenger_test_high",
    "champion_test_auc",
    "champion_test_low",
    "champion_test_high",
    "test_nights",
]


def render_trend(rows: pd.DataFrame, title: str) -> bytes:
    """Champion and challenger ROC AUC with intervals across nights: selection split (decides) and test (reports)."""
    from matplotlib.figure import Figure

    from medcore.assess.evaluation import png_bytes

    fig = Figure(figsize=(8, 3.4))
    nights = pd.to_datetime(rows["night"], utc=True, errors="coerce")
    x = list(range(len(rows)))
    labels = [n.strftime("%m-%d") if not pd.isna(n) else "?" for n in nights]
    for i, (split, heading) in enumerate(
        (("selection", "selection split (decides)"), ("test", "locked test (reports)"))
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        for who, colour, offset in (("champion", "tab:blue", -0.08), ("challenger", "tab:orange", 0.08)):
            auc = pd.to_numeric(rows[f"{who}_{split}_auc"], errors="coerce")
            low = pd.to_numeric(rows[f"{who}_{split}_low"], errors="coerce")
            high = pd.to_numeric(rows[f"{who}_{split}_high"], errors="coerce")
            shown = auc.notna()
            if not shown.any():
                continue
            xs = [v + offset for v, s in zip(x, shown) if s]
            err = [(auc - low.fillna(auc))[shown].clip(lower=0), (high.fillna(auc) - auc)[shown].clip(lower=0)]
            ax.errorbar(
                xs,
                auc[shown],
                yerr=err,
                fmt="o-" if who == "champion" else "s",
                color=colour,
                capsize=3,
                markersize=4,
                label=who,
            )
        if split == "selection" and "best_selection_auc" in rows:
            best = pd.to_numeric(rows["best_selection_auc"], errors="coerce")
            if best.notna().any():
                ax.step(x, best, where="mid", color="grey", ls=":", label="best on current data")
        promoted = [v for v, d in zip(x, rows["decision"]) if d == "promoted"]
        for v in promoted:
            ax.axvline(v, color="tab:green", alpha=0.15, lw=6)
        # One or two nights: centred, with room either side, rather than a point on the frame's edge.
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_xticks(x, labels, rotation=45 if len(x) > 6 else 0, fontsize=9)
        ax.tick_params(axis="y", labelsize=9)
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0.0), min(high, 1.01))  # an AUC lies in 0-1: no axis above 1 round a perfect score
        ax.set(title=heading, ylabel="ROC AUC" if i == 0 else None)
        ax.grid(alpha=0.3)
        if i == 0 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{title}: ROC AUC by night (green: promoted)", fontsize=10)
    fig.subplots_adjust(top=0.84, wspace=0.25)
    return png_bytes(fig)


def trend_csv(rows: list[dict[str, Any]]) -> str:
    """The trend rows as CSV text, columns in TREND_COLUMNS order."""
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=TREND_COLUMNS).to_csv(buffer, index=False)
    return buffer.getvalue()
