"""Comparing runs: line up their sites, pick a step in each, and compute the differences.

Matching, in this order:

1. **by name**: a site name that every run has is matched across all runs;
2. **by position**: the sites left over are matched by their position among the left-over sites of
   the same role (``actprobe.analysis.roles.role``: activation, conv, linear, norm, pool, …) — the k-th
   left-over activation of each run with the k-th of every other — when every run has one there.

What neither matches is reported per run as unmatched. No rendering here (see ``compare_view``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


from ..errors import OptionError
from ..runfile.reader import Run
from .roles import role
from .rows import parse_step, row_for

COMPARE_STATS = ("mean", "std", "near_zero", "dead", "nonfinite", "min", "max", "count")
DEFAULT_STATS = ("mean", "std", "near_zero", "dead")
FRACTIONS = frozenset({"near_zero", "dead", "nonfinite"})


@dataclass(frozen=True)
class MatchedSite:
    """One site lined up across runs: ``columns[r]`` is its column in run r, ``names[r]`` its name."""

    label: str
    role: str
    names: tuple[str, ...]
    columns: tuple[int, ...]
    how: str  # "name" or "position"


@dataclass(frozen=True)
class Matching:
    sites: tuple[MatchedSite, ...]
    unmatched: tuple[tuple[str, ...], ...]  # per run, names that were not matched

    @property
    def method(self) -> str:
        """``name``, ``position``, ``name+position``, or ``none``."""
        hows = {site.how for site in self.sites}
        if not hows:
            return "none"
        return "+".join(h for h in ("name", "position") if h in hows)

    @property
    def by_name(self) -> int:
        return sum(site.how == "name" for site in self.sites)

    @property
    def by_position(self) -> int:
        return sum(site.how == "position" for site in self.sites)


def match_sites(runs: Sequence[Run]) -> Matching:
    """Line up the sites of ``runs`` (at least two): by name, then by position within each role."""
    first = runs[0]
    matched: list[MatchedSite] = []
    used: list[set[int]] = [set() for _ in runs]
    index = [{name: i for i, name in enumerate(run.sites)} for run in runs]
    for i, name in enumerate(first.sites):
        if all(name in idx for idx in index[1:]):
            columns = tuple(idx[name] for idx in index)
            for r, c in enumerate(columns):
                used[r].add(c)
            matched.append(MatchedSite(name, role(first.site_module_types[i]), (name,) * len(runs), columns, "name"))
    leftovers: list[dict[str, list[int]]] = []
    for r, run in enumerate(runs):
        by_role: dict[str, list[int]] = {}
        for c, kind in enumerate(run.site_module_types):
            if c not in used[r]:
                by_role.setdefault(role(kind), []).append(c)
        leftovers.append(by_role)
    for kind in leftovers[0]:
        count = min(len(left.get(kind, [])) for left in leftovers)
        for k in range(count):
            columns = tuple(left[kind][k] for left in leftovers)
            names = tuple(run.sites[c] for run, c in zip(runs, columns))
            for r, c in enumerate(columns):
                used[r].add(c)
            label = names[0] if len(set(names)) == 1 else " ↔ ".join(dict.fromkeys(names))
            matched.append(MatchedSite(label, kind, names, columns, "position"))
    matched.sort(key=lambda site: site.columns[0])
    unmatched = tuple(tuple(name for c, name in enumerate(run.sites) if c not in used[r])
                      for r, run in enumerate(runs))
    return Matching(tuple(matched), unmatched)


@dataclass(frozen=True)
class StepChoice:
    """The row used in each run, and a note when a run lacks the step asked for."""

    rows: tuple[int, ...]
    steps: tuple[int, ...]
    notes: tuple[str, ...] = ()


def choose_rows(runs: Sequence[Run], step: str) -> StepChoice:
    """``first``, ``last``, or a step number N: each run's row at N, else its last row before N.

    Raises:
        OptionError: a malformed ``step``, or a run that has no row at or before N.
    """
    wanted = parse_step(step)
    rows, steps, notes = [], [], []
    for run in runs:
        row = row_for(run, step, wanted)
        if wanted is not None and int(run.step[row]) != wanted:
            notes.append(f"{run.path.name}: step {wanted} not recorded; using step {int(run.step[row])}")
        rows.append(row)
        steps.append(int(run.step[row]))
    return StepChoice(tuple(rows), tuple(steps), tuple(notes))


def parse_stats(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise OptionError("--stats names no statistic")
    _check_stats(names, " in --stats")
    return names


def _check_stats(names: Sequence[str], where: str = "") -> None:
    for name in names:
        if name not in COMPARE_STATS:
            raise OptionError(f"unknown statistic {name!r}{where}; available: {', '.join(COMPARE_STATS)}")


@dataclass(frozen=True)
class Cell:
    """One site and statistic: each run's value, and each later run's change against the first."""

    site: MatchedSite
    stat: str
    values: tuple[float, ...]
    changes: tuple[float, ...]  # run r minus run 0, for r = 1..; NaN where either is NaN
    score: float  # how large the largest change is, comparable across statistics


@dataclass(frozen=True)
class Comparison:
    runs: tuple[Run, ...]
    matching: Matching
    choice: StepChoice
    stats: tuple[str, ...]
    cells: tuple[Cell, ...] = field(repr=False)

    def largest(self, k: int = 5) -> list[Cell]:
        """The ``k`` cells with the largest change (by ``score``), largest first."""
        ranked = sorted((c for c in self.cells if math.isfinite(c.score) and c.score > 0), key=lambda c: -c.score)
        return ranked[:k]


def score(stat: str, values: Sequence[float]) -> float:
    """A change's size: fractions in absolute points; std and count (when both are positive) as the
    absolute log-ratio; mean, min and max relative to the larger of the two magnitudes."""
    base = values[0]
    best = 0.0
    for other in values[1:]:
        if not (math.isfinite(base) and math.isfinite(other)):
            continue
        if stat in FRACTIONS:
            size = abs(other - base)
        elif stat in ("std", "count") and base > 0 and other > 0:
            size = abs(math.log(other / base))
        else:
            size = abs(other - base) / max(abs(base), abs(other), 1e-12)
        best = max(best, size)
    return best


def compare(runs: Sequence[Run], *, step: str = "last", stats: Sequence[str] = DEFAULT_STATS) -> Comparison:
    """Compare ``runs`` (two or more) at one step each.

    Raises:
        OptionError: fewer than two runs, a bad step or statistic, or a run without rows.
    """
    if len(runs) < 2:
        raise OptionError("compare needs at least two run files")
    _check_stats(stats)
    choice = choose_rows(runs, step)
    matching = match_sites(runs)
    cells = []
    for site in matching.sites:
        for stat in stats:
            values = tuple(float(run.stats[stat][row, c]) for run, row, c in zip(runs, choice.rows, site.columns))
            changes = tuple(v - values[0] for v in values[1:])
            cells.append(Cell(site, stat, values, changes, score(stat, values)))
    return Comparison(tuple(runs), matching, choice, tuple(stats), tuple(cells))
