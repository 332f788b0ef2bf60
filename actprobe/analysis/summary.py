"""The per-site summary of a run (``actprobe show``): statistics at the first and last recorded step and
the rule engine's observations grouped by site; no rendering here.

The observations are ``rules.evaluate``'s, the same that ``diagnose`` groups by rule, under the
same ``Thresholds``: the two views cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import OptionError
from ..runfile.reader import Run
from .roles import matching
from .rows import first_and_last
from .rules import SEVERITIES, Observation, evaluate, rank
from .thresholds import Thresholds, as_stored

__all__ = ["RunSummary", "SiteSummary", "Thresholds", "as_stored", "state", "summarize"]

SUMMARY_STATS = ("mean", "std", "near_zero", "dead", "nonfinite")


@dataclass(frozen=True)
class SiteSummary:
    name: str
    module_type: str
    first: dict[str, float]
    last: dict[str, float]
    observations: tuple[Observation, ...] = ()

    @property
    def worst(self) -> str | None:
        """The most severe observation's severity, or None."""
        return max((o.severity for o in self.observations), key=rank, default=None)

    @property
    def flagged(self) -> bool:
        """Whether a warning or an error was observed here (info alone does not flag a site)."""
        return self.worst is not None and rank(self.worst) >= rank("warning")


@dataclass(frozen=True)
class ParameterSummary:
    """A parameter tensor some rule observed (``params=True`` files): its name and the observations."""

    name: str
    observations: tuple[Observation, ...]


@dataclass(frozen=True)
class RunSummary:
    """What ``actprobe show`` prints: the run's context and one ``SiteSummary`` per site shown."""

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
    thresholds: Thresholds = field(default_factory=Thresholds)
    uncalled: tuple[str, ...] = ()  # selected modules that were never called: they have no site
    total_sites: int = 0  # sites in the run (``sites`` may show fewer: see ``pick``)
    observations: tuple[Observation, ...] = ()  # every observation of the run, also at sites not shown
    grads: bool = False  # the file has gradient statistics: each site's first/last carry "grad_std"
    parameters: tuple[ParameterSummary, ...] = ()  # the parameters some rule observed (update-ratio)
    ranks: int = 0  # a distributed run merged from this many ranks' files; 0 otherwise
    notes: tuple[str, ...] = ()  # how the run was put together (``Run.notes``)

    def counts(self) -> dict[str, int]:
        """Observations per severity, over the whole run."""
        return {s: sum(o.severity == s for o in self.observations) for s in SEVERITIES}

    def pick(self, *, flagged: bool = False, top: int | None = None, select: str | Sequence[str] = ()) -> RunSummary:
        """The sites to show: matching ``select`` (globs on names, or exact class names; one string or a
        list), with a warning or an error (``flagged``), the ``top`` K most severe (0: all).

        Raises:
            OptionError: ``top`` is negative, or ``select`` matches no site.
        """
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 0):
            raise OptionError(f"--top must be a whole number ≥ 0 (0 shows all), got {top!r}")
        select = [select] if isinstance(select, str) else list(select)
        sites = list(self.sites)
        if select:
            names = set(self._matching(select))
            sites = [s for s in sites if s.name in names]
        if flagged:
            sites = [s for s in sites if s.flagged]
        if top:
            order = sorted(range(len(sites)), key=lambda k: (-rank(sites[k].worst or "info") - bool(sites[k].worst),
                                                             -len(sites[k].observations), k))
            sites = [sites[k] for k in sorted(order[:top])]
        return replace(self, sites=tuple(sites))

    def _matching(self, select: Sequence[str]) -> list[str]:
        columns = matching([s.name for s in self.sites], [s.module_type for s in self.sites], select)
        names = [self.sites[c].name for c in columns]
        if not names:
            raise OptionError(f"--select {' '.join(select)} matches no site (globs on site names, or module "
                              f"class names such as {self.sites[0].module_type if self.sites else 'ReLU'})")
        return names

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "first_step": self.first_step, "last_step": self.last_step,
                "sites_total": self.total_sites, "counts": self.counts(), "uncalled": list(self.uncalled),
                "sites": [{"site": s.name, "module_type": s.module_type, "first": s.first, "last": s.last,
                           "observations": [_observation_json(o) for o in s.observations]} for s in self.sites],
                "parameters": [{"parameter": p.name, "observations": [_observation_json(o) for o in p.observations]}
                               for p in self.parameters], "ranks": self.ranks, "notes": list(self.notes)}


def _observation_json(o: Observation) -> dict[str, Any]:
    return {"rule": o.rule, "severity": o.severity, "steps": list(o.steps), "value": o.value, "detail": o.detail}


def summarize(run: Run, thresholds: Thresholds | None = None, *, live: bool = False) -> RunSummary:
    """Summarise the first and last recorded rows of ``run`` and group the rules' observations by site.

    Raises:
        OptionError: the run has no rows (see ``state``).
    """
    if run.rows == 0:
        raise OptionError(state(run, live))
    thresholds = thresholds or Thresholds()
    observations = evaluate(run, thresholds)
    rows = first_and_last(run)
    first_row, last_row = rows["first"], rows["last"]
    values = {}
    for when, row in rows.items():
        read = {s: np.asarray(run.stats[s][row], dtype=np.float64) for s in SUMMARY_STATS}  # one row each
        values[when] = [{s: float(read[s][i]) for s in SUMMARY_STATS} for i in range(len(run.sites))]
        if run.grad_stats:  # the gradient's std beside the output's (grads=True)
            grad = np.asarray(run.grad_stats["std"][row], dtype=np.float64)
            for i, site in enumerate(values[when]):
                site["grad_std"] = float(grad[i])
    by_site: dict[int, list[Observation]] = {}
    for obs in observations:
        by_site.setdefault(obs.column, []).append(obs)
    sites = tuple(SiteSummary(name, kind, values["first"][i], values["last"][i], tuple(by_site.get(i, ())))
                  for i, (name, kind) in enumerate(zip(run.sites, run.site_module_types)))
    return RunSummary(
        path=str(run.path), rows=run.rows, first_step=int(run.step[first_row]), last_step=int(run.step[last_row]),
        seconds=float(run.time[last_row]), attrs=dict(run.attrs), sites=sites,
        scalars_first={k: float(v[first_row]) for k, v in run.scalars.items()},
        scalars_last={k: float(v[last_row]) for k, v in run.scalars.items()}, live=live,
        stopped=not run.closed and not live, thresholds=thresholds, uncalled=tuple(run.uncalled),
        total_sites=len(run.sites), observations=tuple(observations), grads=bool(run.grad_stats),
        parameters=tuple(ParameterSummary(run.params[c - len(run.sites)], tuple(found))
                         for c, found in sorted(by_site.items()) if c >= len(run.sites)),
        ranks=len(run.ranks), notes=tuple(run.notes))


def state(run: Run, live: bool) -> str:
    """One line on a run without rows: why it has none."""
    if live:
        why = "a probe is recording into it"
    elif not run.closed:
        why = "its writer stopped before its first commit: a crash or a write error"
    else:
        why = "its writer closed it without recording a step"
    return f"{run.path}: no rows committed yet ({why})"
