"""Which recorded rows a view looks at: the first, the last, or the one at a given step.

One place for the choice, so that ``show``, ``diagnose`` and ``compare`` mean the same rows.
"""

from __future__ import annotations

import numpy as np

from ..errors import OptionError
from ..runfile.reader import Run


def first_and_last(run: Run) -> dict[str, int]:
    """``{"first": 0, "last": rows − 1}``: the two rows every verdict looks at (the same row twice
    when the run has one)."""
    return {"first": 0, "last": run.rows - 1}


def distinct_first_and_last(run: Run) -> tuple[int, ...]:
    """The first and the last row, once each (one row when there is only one)."""
    return tuple(dict.fromkeys(first_and_last(run).values()))


def parse_step(step: str) -> int | None:
    """``first``/``last`` → None; a step number N ≥ 0 → N; anything else is an ``OptionError``."""
    if step in ("first", "last"):
        return None
    try:
        wanted = int(step)
    except ValueError:
        raise OptionError(f"--step must be first, last or a step number, got {step!r}") from None
    if wanted < 0:
        raise OptionError(f"--step must be first, last or a step number ≥ 0, got {step!r}")
    return wanted


def row_for(run: Run, step: str, wanted: int | None) -> int:
    """``run``'s row for ``step`` (first, last, or ``wanted``: the row at N, else its last row before N).

    Raises:
        OptionError: the run has no rows, or none at or before N.
    """
    if run.rows == 0:
        raise OptionError(f"{run.path} has no rows committed yet")
    if wanted is None:
        return first_and_last(run)[step]
    at_or_before = np.flatnonzero(run.step <= wanted)
    if not len(at_or_before):
        raise OptionError(f"{run.path} has no recorded step at or before {wanted} "
                          f"(its steps are {int(run.step[0])}..{int(run.step[-1])})")
    return int(at_or_before[-1])
