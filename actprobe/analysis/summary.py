"""The per-site summary of a run, and the flags that mark what looks wrong; no rendering here.

A flag holds at the first or the last recorded step (or both). Thresholds, all adjustable:

| flag | holds when |
|---|---|
| `std-collapse` | the site's std < ``collapse`` × the std of the first site (the signal shrinks with depth) |
| `std-explosion` | the site's std > ``explosion`` × the std of the first site |
| `mean-shift` | after a ReLU-like module, abs(mean) > ``mean_shift`` × std |
| `near-zero` | near_zero > ``near_zero`` |
| `dead` | dead > ``dead`` |
| `non-finite` | nonfinite > 0 |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import OptionError
from ..runfile.reader import Run
from .roles import RELU_LIKE
from .rows import first_and_last

SUMMARY_STATS = ("mean", "std", "near_zero", "dead", "nonfinite")


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """When a flag is raised; see the module docstring."""

    collapse: float = 0.1
    explosion: float = 10.0
    mean_shift: float = 0.5
    near_zero: float = 0.5
    dead: float = 0.1


@dataclass(frozen=True)
class Flag:
    """One thing that looks wrong at one site. ``when`` is ``"first"``, ``"last"`` or ``"both"``."""

    code: str
    severity: str  # "warning" or "error"
    when: str
    detail: str  # e.g. "std ×0.07" (relative to the first site)


@dataclass(frozen=True)
class SiteSummary:
    name: str
    module_type: str
    first: dict[str, float]
    last: dict[str, float]
    flags: tuple[Flag, ...] = ()


@dataclass(frozen=True)
class RunSummary:
    """What ``actprobe show`` prints: the run's context and one ``SiteSummary`` per site."""

    path: str
    rows: int
    first_step: int
    last_step: int
    seconds: float
    attrs: dict[str, object]
    sites: tuple[SiteSummary, ...]
    scalars_first: dict[str, float] = field(default_factory=dict)
    scalars_last: dict[str, float] = field(default_factory=dict)
    live: bool = False
    stopped: bool = False  # its writer neither is writing it nor closed it: a crash or a write error

    @property
    def flag_count(self) -> int:
        return sum(len(site.flags) for site in self.sites)


def summarize(run: Run, thresholds: Thresholds | None = None, *, live: bool = False) -> RunSummary:
    """Summarise the first and last recorded rows of ``run``.

    Raises:
        OptionError: the run has no rows (see ``state``).
    """
    if run.rows == 0:
        raise OptionError(state(run, live))
    thresholds = thresholds or Thresholds()
    rows = first_and_last(run)
    first_row, last_row = rows["first"], rows["last"]
    values = {when: [{s: float(run.stats[s][row, i]) for s in SUMMARY_STATS} for i in range(len(run.sites))]
              for when, row in rows.items()}
    sites = []
    for i, (name, kind) in enumerate(zip(run.sites, run.site_module_types)):
        flags = _merge({when: _flags(i, kind, values[when], thresholds) for when in rows})
        sites.append(SiteSummary(name, kind, values["first"][i], values["last"][i], flags))
    return RunSummary(
        path=str(run.path), rows=run.rows, first_step=int(run.step[first_row]), last_step=int(run.step[last_row]),
        seconds=float(run.time[last_row]), attrs=dict(run.attrs), sites=tuple(sites),
        scalars_first={k: float(v[first_row]) for k, v in run.scalars.items()},
        scalars_last={k: float(v[last_row]) for k, v in run.scalars.items()}, live=live,
        stopped=not run.closed and not live)


def state(run: Run, live: bool) -> str:
    """One line on a run without rows: why it has none."""
    if live:
        why = "a probe is recording into it"
    elif not run.closed:
        why = "its writer stopped before its first commit: a crash or a write error"
    else:
        why = "its writer closed it without recording a step"
    return f"{run.path}: no rows committed yet ({why})"


def _flags(i: int, kind: str, row: list[dict[str, float]], t: Thresholds) -> list[tuple[str, str, str]]:
    site, found = row[i], []
    reference = row[0]["std"]
    if i > 0 and math.isfinite(reference) and reference > 0 and math.isfinite(site["std"]):
        ratio = site["std"] / reference
        if ratio < t.collapse:
            found.append(("std-collapse", "warning", f"std ×{ratio:.2g}"))
        elif ratio > t.explosion:
            found.append(("std-explosion", "warning", f"std ×{ratio:.3g}"))
    if kind in RELU_LIKE and site["std"] > 0 and abs(site["mean"]) > t.mean_shift * site["std"]:
        found.append(("mean-shift", "warning", f"mean {site['mean'] / site['std']:+.2f}σ"))
    if site["near_zero"] > as_stored(t.near_zero):
        found.append(("near-zero", "warning", f"near-zero {site['near_zero']:.0%}"))
    if site["dead"] > as_stored(t.dead):
        found.append(("dead", "error", f"dead {site['dead']:.0%}"))
    if site["nonfinite"] > 0:
        found.append(("non-finite", "error", f"NaN/Inf {100 * site['nonfinite']:.2g}%"))
    return found


def as_stored(threshold: float) -> float:
    """A fraction as the file stores it (float32), so that exactly 10% dead is not "more than 10%"."""
    return float(np.float32(threshold))


def _merge(by_when: dict[str, list[tuple[str, str, str]]]) -> tuple[Flag, ...]:
    first = {code: (severity, detail) for code, severity, detail in by_when["first"]}
    last = {code: (severity, detail) for code, severity, detail in by_when["last"]}
    merged = []
    for code in dict.fromkeys([*first, *last]):
        when = "both" if code in first and code in last else ("first" if code in first else "last")
        severity, detail = last.get(code) or first[code]
        merged.append(Flag(code, severity, when, detail))
    return tuple(merged)
