"""Comparing runs: line up their sites, pick a step in each, and compute the differences.

Matching, in this order:

1. **by name**: a site name that every run has, with the same module type in every run, is matched
   across all runs (a ``features.3`` that is a Conv2d in one run and a ReLU in another is not);
2. **by position**: the sites left over are matched by their position among the left-over sites of
   the same role (``actprobe.analysis.roles.role``: activation, conv, linear, norm, pool, …), in the
   order of their depth in the layer graph (then of their columns) — the k-th left-over activation of
   each run with the k-th of every other — when every run has one there.

What neither matches is reported per run as unmatched. No rendering here (see ``render.compare``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import OptionError
from ..runfile.reader import Run
from .graph import LayerGraph
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
    module_types: tuple[str, ...] = ()

    @property
    def module_type(self) -> str:
        """The module type, or the types of each run joined by ↔ when they differ."""
        return " ↔ ".join(dict.fromkeys(self.module_types))


@dataclass(frozen=True)
class Matching:
    sites: tuple[MatchedSite, ...]
    unmatched: tuple[tuple[str, ...], ...]  # per run, names that were not matched
    type_clashes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # names every run has, with differing types

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
    """Line up the sites of ``runs`` (at least two): by name where the types agree, then by position."""
    first = runs[0]
    matched: list[MatchedSite] = []
    used: list[set[int]] = [set() for _ in runs]
    index = [{name: i for i, name in enumerate(run.sites)} for run in runs]
    clashes = []
    for i, name in enumerate(first.sites):
        if not all(name in idx for idx in index[1:]):
            continue
        columns = tuple(idx[name] for idx in index)
        types = tuple(run.site_module_types[c] for run, c in zip(runs, columns))
        if len(set(types)) > 1:
            clashes.append((name, types))
            continue
        _use(used, columns)
        matched.append(MatchedSite(name, role(types[0]), (name,) * len(runs), columns, "name", types))
    leftovers = [_leftovers_by_role(run, used[r]) for r, run in enumerate(runs)]
    for kind in leftovers[0]:
        for k in range(min(len(left.get(kind, [])) for left in leftovers)):
            columns = tuple(left[kind][k] for left in leftovers)
            names = tuple(run.sites[c] for run, c in zip(runs, columns))
            _use(used, columns)
            label = names[0] if len(set(names)) == 1 else " ↔ ".join(dict.fromkeys(names))
            types = tuple(run.site_module_types[c] for run, c in zip(runs, columns))
            matched.append(MatchedSite(label, kind, names, columns, "position", types))
    matched.sort(key=lambda site: site.columns[0])
    unmatched = tuple(tuple(name for c, name in enumerate(run.sites) if c not in used[r])
                      for r, run in enumerate(runs))
    return Matching(tuple(matched), unmatched, tuple(clashes))


def _use(used: list[set[int]], columns: tuple[int, ...]) -> None:
    for r, c in enumerate(columns):
        used[r].add(c)


def _leftovers_by_role(run: Run, used: set[int]) -> dict[str, list[int]]:
    """The columns not matched yet, per role, in the order of their depth in the layer graph."""
    depth = LayerGraph.of(run).depths()
    by_role: dict[str, list[int]] = {}
    for c in sorted(range(len(run.sites)), key=lambda c: (depth[c], c)):
        if c not in used:
            by_role.setdefault(role(run.site_module_types[c]), []).append(c)
    return by_role


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
