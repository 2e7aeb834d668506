"""The benchmark report: BENCHMARKS.md and docs/benchmarks/*.md, generated from bench/results/*.json."""

from __future__ import annotations

from pathlib import Path

from bench.reporting.pages import render_pages

__all__ = ["render", "render_pages"]


def render(results: Path) -> str:
    """Every generated page, one after the other (what the tests read)."""
    return "\n".join(render_pages(results).values())
