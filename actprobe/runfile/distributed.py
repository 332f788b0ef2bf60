"""Reading a distributed run: the rank files of a run folder, merged into the statistics of the global batch.

A probe in a multi-process job writes ``<folder>/segment-<k>/rank-<r>.h5`` (``engine.ranks``). Reading
the folder takes its newest segment (a torchelastic restart starts a new one; older segments are
named in ``Run.notes`` and can be read as ``<folder>/segment-<k>``); reading a segment folder takes
that segment. Its rows are the steps that every rank committed; each statistic of a row is merged from
the ranks' partials (``runfile.ranks.combine``) when it is read, block by block, as ``lazy.Source``
reads one file. ``read(folder, rank=r)`` is rank ``r``'s own run file.

Parameters are the same tensors on every rank under DDP (replicated) and different shards under FSDP:
a parameter column whose partials are equal on every rank is taken from rank 0; otherwise its ranks'
partials are merged like the sites'. Scalars are the mean over the ranks of what each passed to
``probe.step``; a row's time is the latest of the ranks'; histogram counts are summed.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from .format import GRAD_STATS, PARAM_GROUPS, PARTIAL_NAMES, PARTIALS, STATISTICS, STATS, UNIT_PARTIAL_NAMES, UNIT_PARTIALS
from .lazy import BLOCK_ROWS, Statistic

# The partials a merged block reads from all ranks together, at most (a wide model's rows are large: 1000
# sites of 64 units hold 1.6 MB of partials a row and rank), and the merged blocks kept
BLOCK_BYTES = 32 << 20
CACHED_BYTES = 256 << 20
from .ranks import COUNT, M2, MAX, MEAN, MIN, combine

SEGMENT = re.compile(r"segment-(\d+)$")
RANK = re.compile(r"rank-(\d+)\.h5$")


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a distributed run's folder (segments inside) or one of its segments (rank files)."""
    return path.is_dir() and bool(_segments(path) or _rank_files(path))


def _numbered(folder: Path, pattern: re.Pattern[str], folders: bool) -> dict[int, Path]:
    """The children of ``folder`` whose names match ``pattern`` (folders or files), by their number."""
    found = {}
    for child in folder.iterdir():
        match = pattern.match(child.name)
        if match and (child.is_dir() if folders else child.is_file()):
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def _segments(folder: Path) -> dict[int, Path]:
    return _numbered(folder, SEGMENT, folders=True)


def _rank_files(segment: Path) -> dict[int, Path]:
    return _numbered(segment, RANK, folders=False)


def read_folder(folder: Path, read_file: Any, rank: int | None = None) -> Any:
    """The run of a distributed run's folder (or of one of its segments); ``read_file`` reads one file."""
    segments = _segments(folder)
    notes: list[str] = []
    if segments:
        number, segment = max(segments.items())
        if len(segments) > 1:
            older = ", ".join(str(folder / f"segment-{k}") for k in segments if k != number)
            notes.append(f"segment {number} of {len(segments)} (torchelastic restarts); the earlier ones: {older}")
    else:
        segment = folder
    files = _rank_files(segment)
    if not files:
        raise FormatError(f"{segment} holds no rank files (rank-<r>.h5)")
    if rank is not None:
        if rank not in files:
            raise FormatError(f"{segment} has no rank {rank}; its ranks are {', '.join(map(str, files))}")
        return read_file(files[rank])
    runs = [read_file(path) for path in files.values()]
    return merged_run(segment, runs, notes)


def merged_run(segment: Path, runs: list[Any], notes: list[str]) -> Any:
    """One run of the ranks' runs: their common steps, each statistic merged on demand."""
    from .reader import Run

    first = runs[0]
    world = first.attrs.get("world_size")
    for run in runs:
        _check_rank(run, first)
    ranks = [int(run.attrs.get("rank", -1)) for run in runs]
    if world is not None and len(runs) < int(world):
        missing = sorted(set(range(int(world))) - set(ranks))
        notes.append(f"ranks {', '.join(map(str, missing))} of {world} left no file: these statistics cover "
                     f"the other {len(runs)} ranks' values only")
    steps = runs[0].step
    for run in runs[1:]:
        steps = np.intersect1d(steps, run.step)
    for run, r in zip(runs, ranks):
        extra = len(run.step) - len(steps)
        if extra:
            notes.append(f"rank {r} committed {extra} row{'s' if extra != 1 else ''} that not every rank has "
                         f"(read it alone with --rank {r})")
    rows = [np.searchsorted(run.step, steps) for run in runs]
    groups = [STATS] + ([GRAD_STATS] if first.grad_stats else []) + [g for g in PARAM_GROUPS if g in first.param_stats]
    source = MergedSource(segment, runs, rows, groups, float(first.attrs.get("dead_eps", 0.0)))
    param_source = source.view(len(first.params))
    hist = None if first.hist is None else MergedHistograms(segment, runs, steps)
    attrs = dict(first.attrs)
    attrs.pop("rank", None)
    attrs["ranks"] = len(runs)
    names = dict.fromkeys(name for run in runs for name in run.scalars)  # a name some ranks never passed too
    scalars = {name: _nanmean([run.scalars[name][r] if name in run.scalars else np.full(len(r), np.nan)
                               for run, r in zip(runs, rows)]) for name in names}
    return Run(
        path=segment, attrs=attrs, sites=first.sites, site_module_types=first.site_module_types,
        site_unit_dims=first.site_unit_dims, step=steps,
        time=np.max([run.time[r] for run, r in zip(runs, rows)], axis=0) if len(steps) else np.zeros(0),
        stats={name: Statistic(source, name) for name in STATISTICS},
        grad_stats={name: Statistic(source, name, GRAD_STATS) for name in STATISTICS} if first.grad_stats else {},
        params=first.params, param_ndims=first.param_ndims,
        param_stats={group: {name: Statistic(param_source, name, group) for name in STATISTICS}
                     for group in first.param_stats},
        hist=hist,
        scalars=scalars, edges=first.edges, uncalled=first.uncalled,
        closed=all(run.closed for run in runs), ranks=tuple(runs), notes=tuple(notes),
    )


def _nanmean(values: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(values) if values else np.zeros((0, 0))
    present = ~np.isnan(stacked)
    total = np.where(present, stacked, 0.0).sum(axis=0)
    counted = present.sum(axis=0)
    return np.where(counted > 0, total / np.maximum(counted, 1), np.nan)


def _check_rank(run: Any, first: Any) -> None:
    if run.attrs.get("distributed") is not True or run.unit_columns is None:
        raise FormatError(f"{run.path} is not a rank file of a distributed run (no distributed attribute or "
                          "partials): it cannot be merged with its folder's other files")
    if run.sites != first.sites or bool(run.grad_stats) != bool(first.grad_stats) or run.params != first.params:
        raise FormatError(f"{run.path} records other sites than {first.path}: ranks of one run record the same "
                          "model; read each alone with --rank")
    if not np.array_equal(run.unit_columns, first.unit_columns):
        raise FormatError(f"{run.path} has other units than {first.path}: read each alone with --rank")
    if run.attrs.get("world_size") != first.attrs.get("world_size"):
        raise FormatError(f"{run.path} and {first.path} belong to jobs of different sizes "
                          f"({run.attrs.get('world_size')} and {first.attrs.get('world_size')} processes)")


class MergedSource:
    """The merged statistics of a distributed run, read on demand: ``lazy.Source``'s interface over the
    ranks' partials. A block of rows (BLOCK_ROWS, fewer when their partials would pass BLOCK_BYTES) is
    read from every rank and merged at once, every statistic of every group; the last blocks are kept,
    up to CACHED_BYTES of merged statistics."""

    def __init__(self, path: Path, runs: list[Any], rows: list[np.ndarray], groups: list[str], dead_eps: float,
                 columns: tuple[int, int] | None = None, shared: MergedSource | None = None) -> None:
        self.path, self._runs, self._rows, self._groups, self._dead_eps = path, runs, rows, groups, dead_eps
        self.rows = len(rows[0]) if rows else 0
        first = runs[0]
        sites, params = len(first.sites), len(first.params)
        self._offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for group in groups:
            width = params if group in PARAM_GROUPS else sites
            self._offsets[group] = (start, width)
            start += width
        self._width = start
        self.sites = sites
        units = int(first.unit_columns[:, 1][first.unit_columns[:, 0] >= 0].sum())
        row_bytes = 8 * len(runs) * (start * len(PARTIAL_NAMES) + units * len(UNIT_PARTIAL_NAMES))
        self._block_rows = max(1, min(BLOCK_ROWS, BLOCK_BYTES // max(row_bytes, 1)))
        self._cached_blocks = max(2, CACHED_BYTES // (8 * len(STATISTICS) * max(start, 1) * self._block_rows))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict() if shared is None else shared._cache
        self._parent = shared

    def view(self, width: int) -> MergedSource:
        """The same source for statistics of ``width`` columns (the parameters'), sharing its cache."""
        twin = MergedSource(self.path, self._runs, self._rows, self._groups, self._dead_eps, shared=self)
        twin.sites = width
        return twin

    def reading(self) -> Any:
        raise FormatError(f"{self.path} is a distributed run: read one rank's file for its raw datasets")

    def _block(self, b: int) -> np.ndarray:
        """(rows of block b, C, 8) merged statistics of every column."""
        cached = self._cache.get(b)
        if cached is not None:
            self._cache.move_to_end(b)
            return cached
        lo, hi = b * self._block_rows, min((b + 1) * self._block_rows, self.rows)
        partials, units = [], []
        for run, rows in zip(self._runs, self._rows):
            picked = rows[lo:hi]
            p, u = _read_partials(run, picked)
            partials.append(p)
            units.append(u)
        _replicated_parameters(partials, self._offsets)
        block = combine(partials, units, self._runs[0].unit_columns, self._dead_eps)
        self._cache[b] = block
        while len(self._cache) > self._cached_blocks:
            self._cache.popitem(last=False)
        return block

    def _columns(self, key: str) -> tuple[slice, int]:
        group, name = key.split("/", 1)
        if group not in self._offsets or name not in STATISTICS:
            raise FormatError(f"{self.path} has no {key!r}")
        start, width = self._offsets[group]
        return slice(start, start + width), STATISTICS.index(name)

    def rows_of(self, name: str, rows: np.ndarray) -> np.ndarray:
        columns, stat = self._columns(name)
        out = np.empty((len(rows), columns.stop - columns.start), dtype=np.float32)
        size = self._block_rows
        for b in np.unique(rows // size):
            chosen = rows // size == b
            out[chosen] = self._block(int(b))[rows[chosen] - b * size][:, columns, stat]
        return out

    def row(self, name: str, row: int) -> np.ndarray:
        return self.rows_of(name, np.array([row]))[0]

    def span(self, name: str, start: int, stop: int) -> np.ndarray:
        return self.rows_of(name, np.arange(start, stop))

    def scan(self, name: str, multiple: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        step = max(multiple, self._block_rows - self._block_rows % max(multiple, 1))
        for start in range(0, self.rows, step):
            yield start, self.span(name, start, min(start + step, self.rows))


def _read_partials(run: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, C, 8) and (n, U, 3) float64: rank ``run``'s partials of its rows ``rows`` (ascending)."""
    if len(rows) == 0:
        return np.zeros((0, 0, len(PARTIAL_NAMES))), np.zeros((0, 0, len(UNIT_PARTIAL_NAMES)))
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    with run.stats[STATISTICS[0]].source.reading() as f:  # the same run as read, or a FormatError
        p = np.stack([np.asarray(f[PARTIALS][name][lo:hi], dtype=np.float64) for name in PARTIAL_NAMES], axis=-1)
        u = np.stack([np.asarray(f[UNIT_PARTIALS][name][lo:hi], dtype=np.float64) for name in UNIT_PARTIAL_NAMES],
                     axis=-1)
    return p[rows - lo], u[rows - lo]


def _replicated_parameters(partials: list[np.ndarray], offsets: dict[str, tuple[int, int]]) -> None:
    """A parameter column whose partials are the same on every rank (DDP: replicated weights) counts once:
    the other ranks' entries become empty (nothing counted)."""
    if len(partials) < 2:
        return
    for group in PARAM_GROUPS:
        if group not in offsets:
            continue
        start, width = offsets[group]
        columns = slice(start, start + width)
        key = (COUNT, MEAN, M2, MIN, MAX)
        reference = partials[0][:, columns][..., key]
        same = np.ones(reference.shape[:2], dtype=bool)
        for other in partials[1:]:
            same &= (np.isclose(other[:, columns][..., key], reference, rtol=0, atol=0, equal_nan=True)).all(axis=-1)
        for other in partials[1:]:
            other[:, columns][same] = _EMPTY  # a view of the rank's block: changed in place


_EMPTY = np.array([0.0, 0.0, 0.0, np.nan, np.nan, 0.0, 0.0, 0.0])  # a partial of no value at all


class MergedHistograms:
    """``reader.Histograms``' interface: the ranks' counts at the steps every rank committed, summed."""

    def __init__(self, path: Path, runs: list[Any], steps: np.ndarray) -> None:
        self._runs = runs
        first = runs[0].hist
        common = first.step
        for run in runs[1:]:
            common = np.intersect1d(common, run.hist.step if run.hist is not None else np.zeros(0, np.int64))
        self.step = common[np.isin(common, steps)]
        self.edges, self.groups, self.path = first.edges, first.groups, path

    def counts(self, group: str = "counts", rows: Any = slice(None), columns: Any = None) -> np.ndarray:
        """As ``reader.Histograms.counts``: rows of the merged histogram steps, summed over the ranks."""
        index = np.arange(len(self.step))[rows]
        steps = self.step[np.atleast_1d(index)]
        total = None
        for run in self._runs:
            counts = run.hist.counts(group, np.searchsorted(run.hist.step, steps), columns)
            total = counts if total is None else total + counts
        assert total is not None
        return total[0] if np.ndim(index) == 0 else total
