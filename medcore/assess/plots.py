"""The evaluation's plots (ROC, precision-recall, calibration, confusion matrix) as PNG bytes; nothing is written."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

__all__ = ["PLOTS", "png_bytes", "render_plots"]

PLOTS = ("roc", "pr", "calibration", "confusion")
# Where a plot's legend goes (matplotlib's names).
LegendPlace = Literal["lower right", "lower left", "upper left"]


def png_bytes(figure) -> bytes:
    """Render a matplotlib `Figure` to PNG bytes with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)  # Agg, bound to this figure only: no pyplot state, no display needed
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _interval_text(metrics: dict[str, Any], name: str) -> str:
    value, interval = metrics.get(name), (metrics.get("intervals") or {}).get(name)
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ({interval['low']:.3f}–{interval['high']:.3f})" if interval else "")


def render_plots(
    labels: np.ndarray, probabilities: np.ndarray, metrics: dict[str, Any], title: str = "", calibration_bins: int = 10
) -> dict[str, bytes]:
    """ROC, PR, calibration and confusion-matrix plots as PNG bytes (nothing is written here)."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=float)
    both = len(np.unique(labels)) == 2
    return {
        "roc": _plot(lambda ax: _draw_roc(ax, labels, probabilities, metrics, both), f"ROC {title}", "lower right"),
        "pr": _plot(
            lambda ax: _draw_pr(ax, labels, probabilities, metrics, both), f"Precision-recall {title}", "lower left"
        ),
        "calibration": _plot(
            lambda ax: _draw_calibration(ax, labels, probabilities, metrics, calibration_bins),
            f"Calibration {title}",
            "upper left",
        ),
        "confusion": _plot(
            lambda ax: _draw_confusion(ax, metrics["confusion_matrix"]),
            f"Confusion at {metrics['threshold']:.3f} {title}",
            None,
            size=(4, 3.6),
        ),
    }


def _plot(
    draw: Callable[[Any], None], title: str, legend: LegendPlace | None, size: tuple[float, float] = (4.5, 4.5)
) -> bytes:
    """One figure: `draw` fills its axes, then the title and legend (at `legend`, if any) go on; PNG bytes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    ax = fig.add_subplot()
    draw(ax)
    ax.set(title=title.strip())
    if legend:
        ax.legend(loc=legend, fontsize=8)
    return png_bytes(fig)


def _draw_roc(ax, labels: np.ndarray, probabilities: np.ndarray, metrics: dict[str, Any], both: bool) -> None:
    from sklearn.metrics import roc_curve

    if both:
        fpr, tpr, _ = roc_curve(labels, probabilities)
        ax.plot(fpr, tpr, label=f"AUC {_interval_text(metrics, 'roc_auc')}")
        if metrics.get("recall") is not None and metrics.get("specificity") is not None:
            ax.plot(1 - metrics["specificity"], metrics["recall"], "o", label=f"threshold {metrics['threshold']:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.02))


def _draw_pr(ax, labels: np.ndarray, probabilities: np.ndarray, metrics: dict[str, Any], both: bool) -> None:
    from sklearn.metrics import precision_recall_curve

    if both:
        precision, recall, _ = precision_recall_curve(labels, probabilities)
        ax.step(recall, precision, where="post", label=f"AP {_interval_text(metrics, 'pr_auc')}")
        if metrics.get("precision") is not None and metrics.get("recall") is not None:
            ax.plot(metrics["recall"], metrics["precision"], "o", label=f"threshold {metrics['threshold']:.3f}")
    ax.axhline(labels.mean() if len(labels) else 0, ls=":", color="grey", label="prevalence")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))


def _draw_calibration(ax, labels: np.ndarray, probabilities: np.ndarray, metrics: dict[str, Any], bins: int) -> None:
    edges = np.linspace(0, 1, bins + 1)  # the bins the calibration error was measured on
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    filled = [b for b in range(bins) if (which == b).any()]
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.plot(
        [probabilities[which == b].mean() for b in filled],
        [labels[which == b].mean() for b in filled],
        "o-",
        label=f"ECE {_interval_text(metrics, 'calibration_error')}",
    )
    ax.bar(
        edges[:-1],
        [(which == b).mean() for b in range(bins)],
        width=1 / bins,
        align="edge",
        alpha=0.2,
        color="grey",
        label="share of images",
    )
    ax.set(xlabel="predicted probability", ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1.02))


def _draw_confusion(ax, cm: dict[str, int]) -> None:
    grid = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    ax.imshow(grid, cmap="Blues")
    for (row, col), count in np.ndenumerate(grid):
        ax.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if count > grid.max() / 2 else "black",
            fontsize=14,
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["negative", "positive"],
        yticklabels=["negative", "positive"],
        xlabel="predicted",
        ylabel="true",
    )
