"""What the fuzz tests share: how many cases each runs, and a count of the cases they ran.

`make test` runs every fuzz test with a few dozen cases; `make fuzz` sets MEDCORE_FUZZ_EXAMPLES so
the suite runs well over a thousand, and prints how many each target ran (pytest's terminal summary).
"""

from __future__ import annotations

import collections
import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("MEDCORE_FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)  # no example database: each `make fuzz` draws afresh, nothing is written to the tree
CASES: collections.Counter[str] = collections.Counter()


def count(target: str) -> None:
    """Record one finished generated case of `target` (called at the end of a case's body)."""
    CASES[target] += 1
