"""Reading a distributed run: the rank files of a run folder, merged into the statistics of the global batch.

A probe in a multi-process job writes ``<folder>/segment-<k>/rank-<r>.h5`` (``engine.ranks``). Reading
the folder takes its newest segment (a torchelastic restart starts a new one; older segments are
named in ``Run.notes`` and can be read as ``<folder>/segment-<k>``); reading a segment folder takes
that segment. Its rows are the steps that every rank committed; each statistic of a row is merged from
the ranks' partials (``runfile.ranks.combine``) when it is read, block by block, as ``lazy.Source``
reads one file. ``read(folder, rank=r)`` is rank ``r``'s own run file.

Parameters are the same tensors on every rank under DDP and shards under FSDP2; each rank file says
which (``param_sharded``): a whole parameter is taken from rank 0, shards are merged like the sites.
Sites are matched by name (``Alignment``). Scalars are the mean over the ranks of what each passed to
``probe.step``; a row's time is the latest of the ranks'; histogram counts are summed.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from .format import GRAD_STATS, PARAM_GROUPS, PARTIAL_NAMES, PARTIALS, STATISTICS, STATS, UNIT_PARTIAL_NAMES, UNIT_PARTIALS
from .lazy import BLOCK_ROWS, Statistic
from .ranks import combine, dead_fraction

# The partials a merged block reads from all ranks together, at most (a wide model's rows are large: 1000
# sites of 64 units hold 1.6 MB of partials a row and rank), and the merged blocks kept
BLOCK_BYTES = 32 << 20
CACHED_BYTES = 256 << 20
MAX_WORLD = 1 << 20  # a rank file's world_size beyond this is not believed

SEGMENT = re.compile(r"segment-(\d+)$")
RANK = re.compile(r"rank-(\d+)\.h5$")


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a distributed run's folder (segments inside) or one of its segments (rank files)."""
    return path.is_dir() and bool(_segments(path) or _rank_files(path))


def _numbered(folder: Path, pattern: re.Pattern[str], folders: bool) -> dict[int, Path]:
    """The children of ``folder`` whose names match ``pattern`` (folders or files), by their number.

    Raises:
        FormatError: the folder cannot be listed, or two names give one number (``rank-1``, ``rank-01``).
    """
    found: dict[int, Path] = {}
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        raise FormatError(f"{folder}: cannot list it ({exc.strerror or exc})") from None
    for child in children:
        match = pattern.match(child.name)
        if match and (child.is_dir() if folders else child.is_file()):
            number = int(match.group(1))
            if number in found:
                raise FormatError(f"{folder} has both {found[number].name} and {child.name}: which is it?")
            found[number] = child
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
        # the newest segment that has a rank file: a restarted job's segment is empty until its first step
        with_files = {k: s for k, s in segments.items() if _rank_files(s)}
        number, segment = max((with_files or segments).items())
        empty = [k for k in segments if k > number]
        if len(segments) > 1:
            older = ", ".join(str(folder / f"segment-{k}") for k in segments if k < number)
            notes.append(f"segment {number} of {len(segments)} (torchelastic restarts)"
                         + (f"; the earlier ones: {older}" if older else "")
                         + (f"; segment {', '.join(map(str, empty))} has no rank file yet" if empty else ""))
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
    for number, run in zip(files, runs):
        _check_place(run, number)
    return merged_run(segment, runs, notes)


def _check_place(run: Any, number: int) -> None:
    """A rank file's rank and world size: whole numbers that fit, and the rank its name says."""
    attrs = run.attrs
    rank, world = attrs.get("rank"), attrs.get("world_size")
    whole = all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in (rank, world))
    if attrs.get("distributed") is not True or not whole:
        raise FormatError(f"{run.path} is not a rank file of a distributed run (no distributed, rank and "
                          "world_size attributes): it cannot be merged with its folder's other files")
    if not 1 <= int(world) <= MAX_WORLD or not 0 <= int(rank) < int(world):
        raise FormatError(f"{run.path} is damaged: rank {rank} of a world of {world}")
    if int(rank) != number:
        raise FormatError(f"{run.path} holds rank {rank}, not {number}: a copied or renamed rank file")


def merged_run(segment: Path, runs: list[Any], notes: list[str]) -> Any:
    """One run of the ranks' runs: their common steps, each statistic merged on demand."""
    from .reader import Run

    first = runs[0]
    world = int(first.attrs["world_size"])
    for run in runs:
        _check_rank(run, first)
    ranks = [int(run.attrs["rank"]) for run in runs]
    if len(runs) < world:
        present = set(ranks)
        missing = [r for r in range(min(world, len(runs) + 9)) if r not in present][:8]
        more = world - len(runs) - len(missing)
        notes.append(f"ranks {', '.join(map(str, missing))}{f' and {more} more' if more > 0 else ''} of {world} "
                     f"left no file: these statistics cover the other {len(runs)} ranks' values only")
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
    align = Alignment.of(runs, len(groups) - sum(g in PARAM_GROUPS for g in groups), notes)
    dead_eps = first.attrs.get("dead_eps", 0.0)
    if isinstance(dead_eps, bool) or not isinstance(dead_eps, (int, float, np.number)) or not np.isfinite(dead_eps):
        raise FormatError(f"{first.path} is damaged: its dead_eps is {dead_eps!r}")
    source = MergedSource(segment, runs, rows, groups, float(dead_eps), align)
    param_source = source.view(len(first.params))
    hist = None
    if first.hist is not None:
        if all(run.hist is not None for run in runs):
            hist = MergedHistograms(segment, runs, steps, align)
        else:
            notes.append("histograms left out: not every rank's file has them")
    attrs = dict(first.attrs)
    attrs.pop("rank", None)
    attrs["ranks"] = len(runs)
    names = dict.fromkeys(name for run in runs for name in run.scalars)  # a name some ranks never passed too
    scalars = {name: _nanmean([run.scalars[name][r] if name in run.scalars else np.full(len(r), np.nan)
                               for run, r in zip(runs, rows)]) for name in names}
    return Run(
        path=segment, attrs=attrs, sites=align.sites, site_module_types=align.module_types,
        site_unit_dims=align.unit_dims, step=steps,
        time=np.max([run.time[r] for run, r in zip(runs, rows)], axis=0) if len(steps) else np.zeros(0),
        stats={name: Statistic(source, name) for name in STATISTICS},
        grad_stats={name: Statistic(source, name, GRAD_STATS) for name in STATISTICS} if first.grad_stats else {},
        params=first.params, param_ndims=first.param_ndims,
        param_stats={group: {name: Statistic(param_source, name, group) for name in STATISTICS}
                     for group in first.param_stats},
        hist=hist,
        scalars=scalars, edges=first.edges, uncalled=first.uncalled,
        closed=all(run.closed for run in runs), ranks=tuple(runs), notes=tuple(notes),
        row_nonfinite=None if any(run.row_nonfinite is None for run in runs) else np.any(
            [run.row_nonfinite[r] for run, r in zip(runs, rows)], axis=0).reshape(len(steps)),
    )


def _nanmean(values: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(values) if values else np.zeros((0, 0))
    present = ~np.isnan(stacked)
    total = np.where(present, stacked, 0.0).sum(axis=0)
    counted = present.sum(axis=0)
    return np.where(counted > 0, total / np.maximum(counted, 1), np.nan)


def _check_rank(run: Any, first: Any) -> None:
    if run.unit_columns is None:
        raise FormatError(f"{run.path} is not a rank file of a distributed run (no distributed attribute or "
                          "partials): it cannot be merged with its folder's other files")
    if bool(run.grad_stats) != bool(first.grad_stats) or run.params != first.params:
        raise FormatError(f"{run.path} records other {'parameters' if run.params != first.params else 'groups'} "
                          f"than {first.path}: ranks of one run train the same model; read each alone with --rank")
    if run.attrs.get("world_size") != first.attrs.get("world_size"):
        raise FormatError(f"{run.path} and {first.path} belong to jobs of different sizes "
                          f"({run.attrs.get('world_size')} and {first.attrs.get('world_size')} processes)")


@dataclass
class Alignment:
    """The sites of a distributed run — every site any rank recorded, the first rank's in its order, then
    the others' — and where each rank keeps them: a branch (a mixture-of-experts' expert) that a rank never
    called in its first recorded step is not among its sites, and adds nothing to the merged ones."""

    sites: list[str]
    module_types: list[str]
    unit_dims: np.ndarray
    columns: list[np.ndarray]  # per rank: (C,) its column of each merged column, −1 where it has none
    unit_columns: np.ndarray  # (C, 2) the merged unit columns (−1: none, or the ranks' units differ)
    unit_index: list[np.ndarray]  # per rank: (U,) its unit column of each merged unit column, −1: none

    @classmethod
    def of(cls, runs: list[Any], site_groups: int, notes: list[str]) -> Alignment:
        sites: dict[str, tuple[str, int]] = {}
        for run in runs:
            for name, kind, dim in zip(run.sites, run.site_module_types, run.site_unit_dims):
                known = sites.setdefault(name, (kind, int(dim)))
                if known[0] != kind:
                    raise FormatError(f"{run.path} records other sites than {runs[0].path} ({name} is a {kind} "
                                      f"there, a {known[0]} here): ranks of one run record the same model; read "
                                      "each alone with --rank")
        names = list(sites)
        if any(run.sites != names for run in runs):
            notes.append(f"the ranks recorded different sites (a branch or expert that some never called in their "
                         f"first recorded step): the run has the {len(names)} sites any rank recorded")
        params = len(runs[0].unit_columns) - site_groups * len(runs[0].sites)  # the parameters' columns
        width = site_groups * len(names) + params
        columns, units_of = [], []
        for run in runs:
            index = {name: k for k, name in enumerate(run.sites)}
            own = np.full(width, -1, dtype=np.int64)
            for group in range(site_groups):
                for c, name in enumerate(names):
                    if name in index:
                        own[group * len(names) + c] = group * len(run.sites) + index[name]
            own[site_groups * len(names):] = np.arange(site_groups * len(run.sites), site_groups * len(run.sites) + params)
            columns.append(own)
            units_of.append(run.unit_columns)
        unit_columns = np.full((width, 2), -1, dtype=np.int64)
        unit_index: list[list[int]] = [[] for _ in runs]
        differ, cursor = [], 0
        for c in range(site_groups * len(names)):
            counts = {int(units[own[c], 1]) for own, units in zip(columns, units_of) if own[c] >= 0}
            if len(counts) != 1 or -1 in counts:
                if len(counts) > 1:
                    differ.append(names[c % len(names)])
                continue
            (count,) = counts
            unit_columns[c] = (cursor, count)
            cursor += count
            for r, (own, units) in enumerate(zip(columns, units_of)):
                first = int(units[own[c], 0]) if own[c] >= 0 else -1
                unit_index[r] += list(range(first, first + count)) if first >= 0 else [-1] * count
        if differ:
            notes.append(f"sites whose units differ between ranks (their dead fraction is NaN): "
                         f"{', '.join(dict.fromkeys(differ))}")
        return cls(names, [sites[n][0] for n in names], np.array([sites[n][1] for n in names], dtype=np.int8),
                   columns, unit_columns, [np.array(u, dtype=np.int64) for u in unit_index])

    def align(self, rank: int, values: np.ndarray, units: bool) -> np.ndarray:
        """A rank's (n, width, k) partials (of its columns, or of its unit columns with ``units``) on the
        merged columns: nothing counted where the rank has none."""
        index = self.unit_index[rank] if units else self.columns[rank]
        out = np.empty((values.shape[0], len(index), values.shape[2]))
        out[...] = 0.0 if units else _EMPTY
        present = index >= 0
        out[:, present] = values[:, index[present]]
        return out


class MergedSource:
    """The merged statistics of a distributed run, read on demand: ``lazy.Source``'s interface over the
    ranks' partials. A block of rows (BLOCK_ROWS, fewer when their partials would pass BLOCK_BYTES) is
    read from every rank and merged at once, every statistic of every group but ``dead``; ``dead`` alone
    reads the per-unit partials (most of a wide model's file), in blocks of their own. The last blocks
    are kept, up to CACHED_BYTES of merged statistics."""

    def __init__(self, path: Path, runs: list[Any], rows: list[np.ndarray], groups: list[str], dead_eps: float,
                 align: Alignment, shared: MergedSource | None = None) -> None:
        self.path, self._runs, self._rows, self._groups, self._dead_eps = path, runs, rows, groups, dead_eps
        self._align = align
        self.rows = len(rows[0]) if rows else 0
        first = runs[0]
        sites, params = len(align.sites), len(first.params)
        self._offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for group in groups:
            width = params if group in PARAM_GROUPS else sites
            self._offsets[group] = (start, width)
            start += width
        self.sites = sites
        units = len(align.unit_index[0])
        self._block_rows = {  # per kind of block: rows whose partials over all ranks fit in BLOCK_BYTES
            kind: max(1, min(BLOCK_ROWS, BLOCK_BYTES // max(8 * len(runs) * width, 1)))
            for kind, width in (("stats", start * len(PARTIAL_NAMES)), ("dead", units * len(UNIT_PARTIAL_NAMES)))}
        self._cached_blocks = max(4, CACHED_BYTES // (8 * len(STATISTICS) * max(start, 1) * self._block_rows["stats"]))
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict() if shared is None else shared._cache

    def view(self, width: int) -> MergedSource:
        """The same source for statistics of ``width`` columns (the parameters'), sharing its cache."""
        twin = MergedSource(self.path, self._runs, self._rows, self._groups, self._dead_eps, self._align, shared=self)
        twin.sites = width
        return twin

    def reading(self) -> Any:
        raise FormatError(f"{self.path} is a distributed run: read one rank's file for its raw datasets")

    def _block(self, kind: str, b: int) -> np.ndarray:
        """Block b of ``kind``: "stats" — (rows, C, 8) merged statistics of every column, ``dead`` NaN;
        "dead" — (rows, C) the merged dead fractions."""
        cached = self._cache.get((kind, b))
        if cached is not None:
            self._cache.move_to_end((kind, b))
            return cached
        size = self._block_rows[kind]
        lo, hi = b * size, min((b + 1) * size, self.rows)
        group, names = (PARTIALS, PARTIAL_NAMES) if kind == "stats" else (UNIT_PARTIALS, UNIT_PARTIAL_NAMES)
        read = [self._align.align(r, _read_partials(run, rows[lo:hi], group, names), units=kind == "dead")
                for r, (run, rows) in enumerate(zip(self._runs, self._rows))]
        unit_columns = self._align.unit_columns
        if kind == "stats":
            _replicated_parameters(read, self._offsets, self._runs[0].param_sharded)
            block = combine(read, None, unit_columns, self._dead_eps)
        else:
            block = dead_fraction(read, unit_columns, self._dead_eps)
        self._cache[(kind, b)] = block
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
        kind = "dead" if STATISTICS[stat] == "dead" else "stats"
        size = self._block_rows[kind]
        for b in np.unique(rows // size):
            chosen = rows // size == b
            block = self._block(kind, int(b))[rows[chosen] - b * size]
            out[chosen] = block[:, columns] if kind == "dead" else block[:, columns, stat]
        return out

    def row(self, name: str, row: int) -> np.ndarray:
        return self.rows_of(name, np.array([row]))[0]

    def span(self, name: str, start: int, stop: int) -> np.ndarray:
        return self.rows_of(name, np.arange(start, stop))

    def scan(self, name: str, multiple: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        size = self._block_rows["stats"]
        step = max(multiple, size - size % max(multiple, 1))
        for start in range(0, self.rows, step):
            yield start, self.span(name, start, min(start + step, self.rows))


def _read_partials(run: Any, rows: np.ndarray, group: str, names: tuple[str, ...]) -> np.ndarray:
    """(n, width, len(names)) float64: rank ``run``'s partials ``group`` (``partials`` per column,
    ``unit_partials`` per unit) of its rows ``rows`` (ascending)."""
    with run.stats[STATISTICS[0]].source.reading() as f:  # the same run as read, or a FormatError
        width = f[group][names[0]].shape[1]
        if len(rows) == 0:
            return np.zeros((0, width, len(names)))
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        values = np.stack([np.asarray(f[group][name][lo:hi], dtype=np.float64) for name in names], axis=-1)
    return values[rows - lo]


def _replicated_parameters(partials: list[np.ndarray], offsets: dict[str, tuple[int, int]],
                           sharded: np.ndarray | None) -> None:
    """A parameter that every rank holds whole (DDP: ``sharded`` False, or no ``param_sharded`` in the file)
    counts once, from rank 0: the other ranks' entries become empty (nothing counted); shards (FSDP2) are
    merged."""
    if len(partials) < 2:
        return
    for group in PARAM_GROUPS:
        if group not in offsets:
            continue
        start, width = offsets[group]
        columns = slice(start, start + width)
        whole = np.ones(width, dtype=bool) if sharded is None else ~sharded[:width]
        for other in partials[1:]:
            other[:, columns][:, whole] = _EMPTY  # a view of the rank's block: changed in place


_EMPTY = np.array([0.0, 0.0, 0.0, np.nan, np.nan, 0.0, 0.0, 0.0])  # a partial of no value at all


class MergedHistograms:
    """``reader.Histograms``' interface: the ranks' counts at the steps every rank committed, summed."""

    def __init__(self, path: Path, runs: list[Any], steps: np.ndarray, align: Alignment) -> None:
        self._runs, self._align = runs, align
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
        sites = len(self._align.sites)
        total = np.zeros((len(steps), sites, len(self.edges) - 1))
        for r, run in enumerate(self._runs):
            counts = run.hist.counts(group, np.searchsorted(run.hist.step, steps))  # (n, the rank's sites, B)
            own = self._align.columns[r][:sites]
            total[:, own >= 0] += counts[:, own[own >= 0]]
        picked = total if columns is None else total[:, np.asarray(columns)]
        return picked[0] if np.ndim(index) == 0 else picked
