"""Regenerate BENCHMARKS.md and docs/benchmarks/*.md from bench/results/*.json, without retraining anything.

Usage: .venv/bin/python bench/report.py [--results bench/results] [--out BENCHMARKS.md] [--docs docs/benchmarks]

BENCHMARKS.md is a one-page summary, one table per question; each topic's detail goes to
docs/benchmarks/<topic>.md. Each table is drawn from the JSON files one benchmark writes; a missing
file gives a line saying which command makes it, not an empty table. What the figures decided lives
in docs/decisions/, written by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reporting import render, render_pages  # noqa: E402
from medcore.jsonio import atomic_write_bytes  # noqa: E402

__all__ = ["main", "render", "render_pages"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks"))
    args = parser.parse_args(argv)
    for name, text in render_pages(Path(args.results)).items():
        path = Path(args.out) if name == "BENCHMARKS.md" else Path(args.docs) / Path(name).name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, text.encode())
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
