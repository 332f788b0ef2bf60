"""The rule engine: every rule evaluated once per site into observations, under one thresholds table.

``evaluate(run)`` is the only judgement of a run: ``show`` groups its observations by site
(``summary``), ``diagnose`` by rule with advice (``diagnose``), so the two can never disagree.
``RULES`` is the table that docs/DIAGNOSE.md and ``show``'s legend are generated from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..runfile.lazy import row_blocks
from ..runfile.reader import Run
from .graph import LayerGraph, unique_paths
from .roles import GATES, PASS_THROUGH, RELU_LIKE, ZEROING, role
from .rows import distinct_first_and_last
from .thresholds import Thresholds, as_stored

SEVERITIES = ("info", "warning", "error")


def rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class Observation:
    """What one rule saw at one site: how bad, at which steps, the number behind it, in a few words."""

    rule: str
    severity: str
    column: int
    site: str
    steps: tuple[int, ...]
    value: float
    detail: str  # e.g. "near-zero 93%", "std ×0.05 along the path (×0.46/layer)"
    evidence: dict[str, Any] = field(default_factory=dict, compare=False)


def untrained(run: Run) -> bool:
    """An init check (or the toy recipe, which has no optimizer): every row is at initialisation."""
    return run.attrs.get("mode") == "init-check" or run.attrs.get("optimizer") == "none"


@dataclass(frozen=True)
class Context:
    """A run and what the rules know about it: thresholds, layer graph, roles, whether it trained."""

    run: Run
    thresholds: Thresholds
    graph: LayerGraph
    roles: tuple[str, ...]
    untrained: bool  # an init check (or the toy recipe): every row is at initialisation
    gate_branch: frozenset[int]  # sites whose outputs only feed gates: they compute a multiplier, not the signal
    _rows: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, run: Run, thresholds: Thresholds) -> Context:
        graph, roles = LayerGraph.of(run), tuple(role(t) for t in run.site_module_types)
        branch: set[int] = set()
        for c in reversed(graph.order):
            succ = graph.successors[c]
            if succ and all(roles[s] == "gate" or s in branch for s in succ):
                branch.add(c)
        return cls(run, thresholds, graph, roles, untrained(run), frozenset(branch))

    @cached_property
    def judged_paths(self) -> list[tuple[list[int], np.ndarray]]:
        """The paths vanishing and exploding judge, and their stds at the first recorded step (sites
        without a finite std left out); found once for both rules."""
        judged = []
        for path in unique_paths(self.graph.paths(chain_members(self), _norms(self))):
            stds = np.array([self.stat("std", 0, c) for c in path])
            keep = np.isfinite(stds) & (stds > 0)
            if keep.sum() >= self.thresholds.min_layers:
                judged.append(([c for c, k in zip(path, keep) if k], stds[keep]))
        return judged

    @cached_property
    def path_observations(self) -> dict[str, list[Observation]]:
        """What vanishing and exploding observe along the judged paths, found once: their rules report it,
        the gradient rules compare with it."""
        return {"vanishing": _check_path(self, "vanishing", falls=True),
                "exploding": _check_path(self, "exploding", falls=False)}

    def stat(self, name: str, row: int, column: int) -> float:
        """One value of a statistic; each row the rules look at is read once (a run file's rows are read on
        demand, and rules ask for thousands of single values on a wide model)."""
        values = self._rows.get((name, row))
        if values is None:
            values = self._rows[(name, row)] = np.asarray(self.run.stats[name][row])
        return float(values[column])

    def at_init(self, row: int) -> bool:
        """Whether the row shows the model before any update (step 0 comes before the first optimizer step)."""
        return self.untrained or int(self.run.step[row]) == 0

    def constant(self, row: int, column: int) -> bool:
        """Whether the site's whole output was one value (std 0) at that row."""
        return self.stat("std", row, column) == 0.0

    def inherited(self, row: int, column: int) -> bool:
        """Whether none of the site's inputs varied over the batch at that row (each was constant, or had
        every unit dead): what the site shows was decided upstream."""
        preds = self.graph.predecessors[column]
        return bool(preds) and all(self.constant(row, p) or self.stat("dead", row, p) >= 1.0 for p in preds)

    def scale_free(self, column: int) -> bool:
        """A Conv/Linear output read only by normalisation layers: its scale does not matter."""
        succ = self.graph.successors[column]
        return self.roles[column] in ("conv", "linear") and bool(succ) and all(self.roles[s] == "norm" for s in succ)

    def steps(self, rows: list[int]) -> tuple[int, ...]:
        return tuple(sorted({int(self.run.step[r]) for r in rows}))


def _observe(ctx: Context, rule: str, severity: str, column: int, rows: list[int], value: float, detail: str,
             **evidence: Any) -> Observation:
    return Observation(rule, severity, column, ctx.run.sites[column], ctx.steps(rows), value, detail, evidence)


def chain_members(ctx: Context) -> list[int]:
    """The sites whose std follows the signal layer by layer: the activations (gates left out) when a
    path has two of them, else the Conv and Linear layers."""
    acts = [c for c, r in enumerate(ctx.roles) if r == "activation"]
    if any(len(p) >= 2 for p in ctx.graph.paths(acts, _norms(ctx))):
        return acts
    return [c for c, r in enumerate(ctx.roles) if r in ("conv", "linear")]


def _norms(ctx: Context) -> list[int]:
    return [c for c, r in enumerate(ctx.roles) if r == "norm"]


def _check_path(ctx: Context, rule: str, falls: bool) -> list[Observation]:
    """vanishing (``falls``) or exploding: the std along each path at the first recorded step.

    A path is judged on its longest start that meets the rule (at least ``min_layers`` layers): a
    signal that collapses over the first layers and then sits at the level of the biases has vanished,
    although the factor over the whole path is mild.
    """
    found = []
    for path, stds in ctx.judged_paths:
        span = _longest_start(ctx.thresholds, stds, falls)
        if span is None:
            continue
        factor = float((stds[span - 1] / stds[0]) ** (1.0 / (span - 1)))
        names = [ctx.run.sites[c] for c in path]
        found += [_observe(ctx, rule, "error", c, [0], factor, f"std ×{s / stds[0]:.2g} along the path "
                           f"(×{factor:.2f}/layer)", path=names[:span], std=[round(float(v), 6) for v in stds[:span]],
                           path_sites=len(path))
                  for c, s in zip(path, stds)]
    return found


def _longest_start(t: Thresholds, stds: np.ndarray, falls: bool) -> int | None:
    """The most layers k ≥ min_layers such that the path's first k layers vanish (or explode)."""
    for k in range(len(stds), t.min_layers - 1, -1):
        ratios = stds[1:k] / stds[:k - 1]
        factor = (stds[k - 1] / stds[0]) ** (1.0 / (k - 1))
        if falls and factor < t.vanishing_factor and np.mean(ratios < 1) >= t.steady:
            return k
        if not falls and factor > t.exploding_factor and np.mean(ratios > 1) >= t.steady:
            return k
    return None


def check_vanishing(ctx: Context) -> list[Observation]:
    return list(ctx.path_observations["vanishing"])


def check_exploding(ctx: Context) -> list[Observation]:
    return list(ctx.path_observations["exploding"])


def gradient_size(run: Run, row: int, column: int) -> float:
    """The size of a site's gradient in one row, comparable between layers of any shape: its root mean
    square times the square root of its element count (the norm over the batch, up to the batch size)."""
    stats = run.grad_stats
    mean, std, count = (float(stats[name][row, column]) for name in ("mean", "std", "count"))
    return math.sqrt((mean * mean + std * std) * count)


def _check_gradient_path(ctx: Context, rule: str, falls: bool) -> list[Observation]:
    """vanishing-gradient (``falls``) or exploding-gradient: along each path the activations' rules judge,
    the gradient's size from the last layer back to the first, in the first row whose gradients reached
    the whole path. Says whether the activations on that path were healthy (a mismatch: the forward
    signal keeps its scale, the backward one does not)."""
    run, t = ctx.run, ctx.thresholds
    if not run.grad_stats:
        return []
    unhealthy = {o.column for found in ctx.path_observations.values() for o in found}  # activations' verdicts
    found = []
    for path, _ in ctx.judged_paths:
        for row in range(min(run.rows, 8)):
            sizes = np.array([gradient_size(run, row, c) for c in path])
            if np.all(np.isfinite(sizes) & (sizes > 0)):
                break
        else:
            continue  # no gradient reached the whole path in the first rows
        factor = float((sizes[0] / sizes[-1]) ** (1.0 / (len(path) - 1)))  # per layer, last → first
        if not (factor < t.grad_vanishing_factor if falls else factor > t.grad_exploding_factor):
            continue
        healthy = not any(c in unhealthy for c in path)
        names = [run.sites[c] for c in path]
        found += [_observe(ctx, rule, "warning", c, [row], factor,
                           f"gradient ×{size / sizes[-1]:.2g} from the last layer of its path (×{factor:.2f}/layer)"
                           + ("; activations healthy" if healthy and k == 0 else ""),
                           path=names, size=[float(f"{v:.4g}") for v in sizes], activations_healthy=healthy)
                  for k, (c, size) in enumerate(zip(path, sizes))]
    return found


def check_vanishing_gradient(ctx: Context) -> list[Observation]:
    return _check_gradient_path(ctx, "vanishing-gradient", falls=True)


def check_exploding_gradient(ctx: Context) -> list[Observation]:
    return _check_gradient_path(ctx, "exploding-gradient", falls=False)


def check_update_ratio(ctx: Context) -> list[Observation]:
    """update-ratio: each parameter's update-to-data ratio, the median over the recorded steps after the
    first (which Adam-like optimizers take at full learning rate), far from the usual ~1e-3. Parameters
    are columns after the sites (``len(run.sites) + p``)."""
    run, t = ctx.run, ctx.thresholds
    if not run.param_stats or ctx.untrained or run.rows < 2:
        return []  # one recorded step is the first, which says little (a zero-initialised head stops the rest)
    values = np.asarray(run.param_stats["param_stats"]["std"], dtype=np.float64)
    ratio = run.update_ratio()
    rows = slice(1, None)
    found = []
    for p, name in enumerate(run.params):
        if run.param_ndims is not None and run.param_ndims[p] < 2:
            continue  # biases and normalisation scales start constant (0 or 1): their std says nothing of scale
        judged = ratio[rows, p][(values[rows, p] > 0) & np.isfinite(ratio[rows, p])]
        count = float(run.param_stats["param_stats"]["count"][0, p])
        if not len(judged) or count < 2:
            continue  # a constant (zero-initialised) or one-element parameter has no useful ratio
        median = float(np.median(judged))
        if median < t.update_ratio_low or median > t.update_ratio_high:
            kind = "small" if median < t.update_ratio_low else "large"
            found.append(Observation("update-ratio", "warning", len(run.sites) + p, name,
                                     ctx.steps(list(range(run.rows))[rows]), median,
                                     f"update ratio {median:.2g} (too {kind})", {"kind": kind, "parameter": True}))
    return found


def check_mean_shift(ctx: Context) -> list[Observation]:
    found = []
    for c, kind in enumerate(ctx.run.site_module_types):
        if kind not in RELU_LIKE:
            continue
        hits = {}
        for row in distinct_first_and_last(ctx.run):
            mean, std = ctx.stat("mean", row, c), ctx.stat("std", row, c)
            if std > 0 and abs(mean) > ctx.thresholds.mean_shift * std:
                hits[row] = mean / std
        if hits:
            worst = max(hits.values(), key=abs)
            found.append(_observe(ctx, "mean-shift", "info", c, list(hits), abs(worst), f"mean {worst:+.2f}σ"))
    return found


def check_saturation(ctx: Context) -> list[Observation]:
    """saturation on activations and Conv/Linear layers; a trained run that grew out of it is info."""
    found, rows = [], distinct_first_and_last(ctx.run)
    for c, kind in enumerate(ctx.run.site_module_types):
        if not _judged_for_saturation(ctx, c):
            continue
        limit = as_stored(ctx.thresholds.saturation_zeroing if kind in ZEROING else ctx.thresholds.saturation)
        hits = {row: ctx.stat("near_zero", row, c) for row in rows
                if ctx.stat("near_zero", row, c) > limit and not ctx.constant(row, c) and not ctx.inherited(row, c)}
        if not hits:
            continue
        worst = max(hits.values())
        last = rows[-1]
        if last in hits or ctx.untrained:
            found.append(_observe(ctx, "saturation", "warning", c, list(hits), worst, f"near-zero {percent(worst)}"))
        else:
            found.append(_observe(ctx, "saturation", "info", c, list(hits), worst, f"near-zero {percent(worst)} at "
                                  f"init, {percent(ctx.stat('near_zero', last, c))} by the last step", kind="healed"))
    return found


def _judged_for_saturation(ctx: Context, c: int) -> bool:
    """Activations (not gates) and Conv/Linear layers, except model outputs, scale-free layers and the
    branches that compute a gate (a squeeze-excitation's pool → fc → ReLU → fc → Hardsigmoid)."""
    return (ctx.roles[c] in ("activation", "conv", "linear") and not ctx.graph.is_output(c)
            and not ctx.scale_free(c) and c not in ctx.gate_branch)


def check_dead(ctx: Context) -> list[Observation]:
    """dead-units at the last row, where they start: not at a site whose inputs were all constant."""
    t, row, found = ctx.thresholds, ctx.run.rows - 1, []
    for c, kind in enumerate(ctx.run.site_module_types):
        value = ctx.stat("dead", row, c)
        if not value > as_stored(t.dead) or kind in PASS_THROUGH or ctx.roles[c] == "dropout":
            continue
        if ctx.inherited(row, c):
            continue  # none of its inputs varied over the batch: the units died upstream
        if ctx.at_init(row) and ctx.roles[c] in ("conv", "linear") and ctx.constant(row, c):
            found.append(_observe(ctx, "dead-units", "info", c, [row], value, "constant output at init",
                                  kind="constant-at-init"))
            continue
        severity = "error" if value > as_stored(t.dead_error) else "warning"
        found.append(_observe(ctx, "dead-units", severity, c, [row], value, f"dead {percent(value)}",
                              kind="at-init" if ctx.at_init(row) else "trained"))
    return found


def check_non_finite(ctx: Context) -> list[Observation]:
    """non-finite at any row: one scan of the statistic in blocks, so memory does not grow with the rows."""
    sites = len(ctx.run.sites)
    first_bad = np.full(sites, -1, dtype=np.int64)  # per site: the first row with NaN/Inf
    bad_rows = np.zeros(sites, dtype=np.int64)
    rows_any, first_row, origin_row = 0, -1, np.zeros(sites, dtype=bool)
    for start, block in _nonfinite_blocks(ctx.run):
        bad = block > 0
        bad_rows += bad.sum(axis=0)
        any_row = bad.any(axis=1)
        rows_any += int(any_row.sum())
        new = (first_bad < 0) & bad.any(axis=0)
        first_bad[new] = start + bad[:, new].argmax(axis=0)
        if first_row < 0 and any_row.any():
            first_row = start + int(any_row.argmax())
            origin_row = bad[first_row - start]
    found = []
    for c in np.flatnonzero(first_bad >= 0):
        row = int(first_bad[c])
        # where they appeared first: at the first such row, in a site none of whose inputs had them
        origin = bool(origin_row[c]) and not any(origin_row[p] for p in ctx.graph.predecessors[c])
        found.append(_observe(ctx, "non-finite", "error", int(c), [row], float(bad_rows[c]),
                              f"NaN/Inf from step {int(ctx.run.step[row])}" + (" (origin)" if origin else ""),
                              origin=origin, bad_rows=int(bad_rows[c]), rows_with_nonfinite=rows_any))
    return found


def _nonfinite_blocks(run: Run) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, rows)`` blocks of ``stats/nonfinite`` that hold every row with a NaN or an Inf: a file
    that marks those rows (``row_nonfinite``) reads them alone (none in a healthy run), one block per row
    in a sparse run; an older file is scanned whole."""
    if run.row_nonfinite is None:
        yield from row_blocks(run.stats["nonfinite"])
        return
    flagged = np.flatnonzero(run.row_nonfinite)
    if len(flagged) > 64:  # many: a scan in blocks reads them in fewer calls
        yield from row_blocks(run.stats["nonfinite"])
        return
    for row in flagged:
        yield int(row), np.asarray(run.stats["nonfinite"][int(row)])[None]


def check_drift(ctx: Context) -> list[Observation]:
    """drift: a site's std over training, the median of the first rows against the last ones."""
    t, run = ctx.thresholds, ctx.run
    if ctx.untrained or run.rows < t.drift_min_rows:
        return []
    window = max(1, int(round(t.drift_window * run.rows)))
    first = min(int(round(t.drift_from * run.rows)), run.rows - window)
    starts = _medians(_window(run.stats["std"], first, window))  # (S,)
    ends = _medians(_window(run.stats["std"], run.rows - window, window))
    found = []
    for c, kind in enumerate(run.site_module_types):
        if ctx.graph.is_output(c) or ctx.scale_free(c) or kind in GATES or kind in PASS_THROUGH:
            continue
        start, end = float(starts[c]), float(ends[c])
        if start > 0 and end > 0 and math.isfinite(start) and math.isfinite(end):
            ratio = end / start
            if ratio > t.drift_factor or ratio < 1.0 / t.drift_factor:
                found.append(_observe(ctx, "drift", "warning", c, [first, run.rows - 1], ratio,
                                      f"std ×{ratio:.3g} over training", window=window, first=first))
    return found


def check_rank_outlier(ctx: Context) -> list[Observation]:
    """rank-outlier: in a distributed run, a rank whose values at a site are on another scale than the
    other ranks' (a bad data shard), reported where it starts: not at a site whose inputs showed it."""
    run, t = ctx.run, ctx.thresholds
    if len(run.ranks) < 2:
        return []
    found, seen = [], {}  # seen: (row, column) -> the ranks found off there
    for row in distinct_first_and_last(run):
        scales = np.array([_rank_scales(rank, int(run.step[row]), run.sites) for rank in run.ranks])  # (R, S)
        for c in ctx.graph.order:
            off = _off_ranks(scales[:, c], t.rank_factor)
            seen[(row, c)] = set(off)
            if not off or any(set(off) & seen.get((row, p), set()) for p in ctx.graph.predecessors[c]):
                continue
            if any(o.column == c for o in found):
                continue
            ranks = [int(run.ranks[r].attrs.get("rank", r)) for r in off]
            ratio = off[next(iter(off))]
            if len(ranks) == 1:
                detail = f"rank {ranks[0]} at ×{ratio:.3g} the other ranks' scale"
            else:  # two ranks: which one is off cannot be told
                spread = max(ratio, 1 / ratio) if ratio > 0 else math.inf
                detail = f"ranks {' and '.join(map(str, ranks))} differ ×{spread:.3g} in scale"
            found.append(_observe(ctx, "rank-outlier", "warning", c, [row], ratio, detail, ranks=ranks))
    return found


def _rank_scales(rank: Run, step: int, sites: list[str]) -> np.ndarray:
    """(S,): a rank's root mean square (sqrt(mean² + std²)) of each of ``sites`` at ``step`` (NaN where it
    has no row or no such site)."""
    out = np.full(len(sites), np.nan)
    row = int(np.searchsorted(rank.step, step))
    if row >= rank.rows or int(rank.step[row]) != step:
        return out
    mean = rank.stats["mean"][row].astype(np.float64)
    std = rank.stats["std"][row].astype(np.float64)
    own = {name: k for k, name in enumerate(rank.sites)}
    for c, name in enumerate(sites):
        if name in own:
            out[c] = math.sqrt(mean[own[name]] ** 2 + std[own[name]] ** 2)
    return out


def _off_ranks(scales: np.ndarray, factor: float) -> dict[int, float]:
    """The ranks whose scale is more than ``factor`` times (or less than 1/``factor``) the median of the
    others', with that ratio; with two ranks, both or neither."""
    found = {}
    for r, scale in enumerate(scales):
        others = np.delete(scales, r)
        others = others[np.isfinite(others) & (others > 0)]
        if not len(others) or not np.isfinite(scale):  # a rank whose values are all zero is off too
            continue
        ratio = float(scale / np.median(others))
        if ratio > factor or ratio < 1 / factor:
            found[r] = ratio
    if len(found) > 1 and len(scales) > 2:  # keep the farthest: the others are off only by comparison with it
        worst = max(found, key=lambda r: math.inf if found[r] == 0 else abs(math.log(found[r])))
        found = {worst: found[worst]}
    return found


WINDOW_RUNS, WINDOW_RUN_ROWS = 16, 256  # a drift window of more rows is read as that many runs of rows


def _window(values: Any, start: int, rows: int) -> np.ndarray:
    """Rows start … start + rows − 1 of a statistic, or, when they are more than 4,096, 16 runs of 256 rows
    spread evenly over them: the window's median is then read in a bounded time and memory, whatever the
    length of the run (10% of a million rows of 500 sites would be 200 MB)."""
    if rows <= WINDOW_RUNS * WINDOW_RUN_ROWS:
        return np.asarray(values[start:start + rows])
    firsts = start + np.linspace(0, rows - WINDOW_RUN_ROWS, WINDOW_RUNS).round().astype(np.int64)
    return np.concatenate([np.asarray(values[int(f):int(f) + WINDOW_RUN_ROWS]) for f in firsts])


def _medians(rows: np.ndarray) -> np.ndarray:
    """(S,) float64: each column's median over its finite values (NaN for a column without one).

    Vectorised over the columns (``np.nanmedian`` loops over them in Python when any value is NaN), and
    one partition instead of ``np.median``'s two."""
    rows = np.asarray(rows)
    if not rows.shape[0]:
        return np.full(rows.shape[1:], np.nan)
    finite = np.isfinite(rows)
    if finite.all():
        k = rows.shape[0] // 2
        parted = np.partition(rows, k, axis=0)
        high = parted[k].astype(np.float64)
        return high if rows.shape[0] % 2 else (parted[:k].max(axis=0).astype(np.float64) + high) / 2
    ordered = np.sort(np.where(finite, rows, np.inf), axis=0).astype(np.float64)  # finite values first
    count = finite.sum(axis=0)
    low = np.take_along_axis(ordered, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
    high = np.take_along_axis(ordered, count[None] // 2, axis=0)[0]
    return np.where(count > 0, (low + high) / 2, np.nan)


def percent(value: float) -> str:
    """A fraction as a percentage that reads well: ``93%``, ``0.4%``, ``<0.1%``, ``100%``, ``nan``."""
    if value != value:
        return "nan"
    if value == 0 or value >= 0.995:
        return f"{100 * value:.0f}%"
    if value < 0.001:
        return "<0.1%"
    if value < 0.01:
        return f"{100 * value:.1f}%"
    return f"{100 * value:.0f}%"


@dataclass(frozen=True)
class Rule:
    """One rule: its name, severity, when it fires (``{name}`` marks a threshold) and the short advice."""

    name: str
    severity: str
    fires_when: str
    advice: str
    check: Callable[[Context], list[Observation]] = field(repr=False)


RULES: tuple[Rule, ...] = (
    Rule("vanishing", "error",
         "at the first recorded step, along a path of the layer graph, the std falls by a geometric-mean factor "
         "per layer below {vanishing_factor}, and falls between at least {steady} of the consecutive layers "
         "(judged on the longest start of the path, of at least {min_layers} layers, that does; a normalisation "
         "layer ends a path, a residual merge starts one)",
         "init gain too small (PyTorch's default `kaiming_uniform_(a=√5)`): use Kaiming/He init, or normalise",
         check_vanishing),
    Rule("exploding", "error", "the same factor is above {exploding_factor}, rising between at least {steady} "
         "of the layers", "init gain too large: Kaiming for ReLU, Xavier for tanh", check_exploding),
    Rule("vanishing-gradient", "warning",
         "in a file with gradient statistics (`grads=True`), along a path the activation rules judge, the size of "
         "the gradient with respect to each layer's output (root mean square × √elements) shrinks from the path's "
         "last layer back to its first by a geometric-mean factor per layer below {grad_vanishing_factor}, in the "
         "first recorded step whose backward reached the whole path; its detail says when the path's activations "
         "were healthy (the forward signal keeps its scale, the gradient does not)",
         "the first layers barely learn: init gain (Kaiming/He), normalisation, residual connections",
         check_vanishing_gradient),
    Rule("exploding-gradient", "warning", "the same factor is above {grad_exploding_factor}",
         "init gain too large, or a learning rate that blows up the early layers: clip gradients, lower the gain",
         check_exploding_gradient),
    Rule("update-ratio", "warning",
         "in a trained run with parameter statistics (`params=True`) and at least two recorded steps, a "
         "parameter's update-to-data ratio "
         "std(Δw) / std(w), the median over the recorded steps after the first, is below {update_ratio_low} or "
         "above {update_ratio_high} (weights only: parameters of two or more dimensions, not biases or "
         "normalisation scales, which start constant; constant ones left out)",
         "too small: raise the learning rate, or look for a vanishing gradient; too large: lower it, or warm it up",
         check_update_ratio),
    Rule("mean-shift", "info", "after a ReLU-like module, abs(mean) > {mean_shift} × std at the first or last "
         "recorded step", "a mean-centred activation (WIB-ReLU) or normalisation after it", check_mean_shift),
    Rule("saturation", "warning, info", "at an activation (gates such as Sigmoid, Hardsigmoid, Softmax left out) "
         "or a Conv/Linear layer, the near-zero fraction > {saturation} at the first or last recorded step "
         "(> {saturation_zeroing} after ReLU, ReLU6, RReLU, LeakyReLU, PReLU); info when a trained run grew out of "
         "it by the last step; not judged: model outputs (logits), a Conv/Linear read only by normalisation "
         "layers, branches that only feed a gate (a squeeze-excitation), constant outputs, and sites none of "
         "whose inputs varied over the batch", "check init gain, input scaling, learning rate", check_saturation),
    Rule("dead-units", "warning, error", "at the last recorded step, the fraction of units whose std over the "
         "batch is ≤ `dead_eps` (the file's) exceeds {dead}; an error above {dead_error}; reported where the "
         "units die, not at sites none of whose inputs varied over the batch (nor is saturation); a Conv/Linear whose output is constant at initialisation (a zero-initialised "
         "head) is info", "at init: biases and init; after training: lower lr, a leaky activation", check_dead),
    Rule("non-finite", "error", "any NaN or ±Inf at any recorded step; names the first step and the sites "
         "where they appeared first (in the layer graph: none of their inputs had them)", "lr, log/sqrt/division of zero, low-precision overflow", check_non_finite),
    Rule("drift", "warning", "in a trained run with at least {drift_min_rows} rows, a site's std changes by "
         "more than × {drift_factor} either way between the median over {drift_window} of the rows from "
         "{drift_from} of the way in and the median over the last {drift_window} (a window of more than 4,096 "
         "rows: over 16 runs of 256 rows spread evenly across it); model outputs (sites nothing "
         "recorded reads, such as logits), Dropout/Flatten/Identity and Conv/Linear outputs read only by "
         "normalisation layers are left out", "lr too high, missing normalisation", check_drift),
    Rule("rank-outlier", "warning", "in a distributed run, at the first or last recorded step, one rank's "
         "values at a site have a scale (root mean square) more than × {rank_factor} (or below 1/{rank_factor}) "
         "the median of the other ranks' scales; reported where it starts (not at a site one of whose inputs "
         "showed it for the same rank); with two ranks it names both",
         "a bad data shard or a rank that loads other data: compare the ranks with `actprobe show RUN --rank R`",
         check_rank_outlier),
)


def evaluate(run: Run, thresholds: Thresholds | None = None) -> list[Observation]:
    """Every observation of every rule, in rule order, then column order; none for a run without rows."""
    if run.rows == 0:
        return []
    ctx = Context.of(run, thresholds or Thresholds())
    found: list[Observation] = []
    seen: set[tuple[str, int]] = set()
    for rule in RULES:
        for obs in sorted(rule.check(ctx), key=lambda o: (RULE_ORDER[o.rule], o.column)):
            if (obs.rule, obs.column) not in seen:  # a site on two paths is judged once per rule
                seen.add((obs.rule, obs.column))
                found.append(obs)
    return sorted(found, key=lambda o: (RULE_ORDER[o.rule], o.column))


RULE_ORDER = {rule.name: k for k, rule in enumerate(RULES)}
