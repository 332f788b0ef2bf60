"""Merging the ``Partial``s of recorded steps into rows of statistics, one per site.

All partials of a step are merged with a fixed number of batched operations, whatever the number of
sites: entries → units (or one pseudo-unit for outputs without units) → sites, with the parallel
variance formula (Chan et al.) in float64. A site called several times in one step (gradient
accumulation) is merged over all its calls, units included.

Steps whose partials have the same arrangement are gathered in a ``PartialRing`` — one copy of
the step's arena per step — and merged together, many rows at once, before the rows are flushed.
On a CUDA device the merge is a fixed number of kernel launches (``merge_rows``). On the CPU the
ring's rows are handed over (``PartialRing.hand_over``) and merged by the writer thread with the C
extension ``_cmerge`` (``merge_into``), which computes the same formulas in one pass per row.
"""

from __future__ import annotations

import ctypes
import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..runfile.format import PARTIAL_NAMES, UNIT_PARTIAL_NAMES, unit_total
from .arena import Arena, Partial
from .cores import RingCore

try:
    from . import _cmerge
except ImportError:  # built without a C compiler: torch operations merge on the CPU too
    _cmerge = None
_copy = ctypes.memmove if _cmerge is None else _cmerge.copy  # (destination, source, bytes)


# The most memory one ring may take (all its buffers together); steps that need more are merged one at a time.
RING_BYTES = 64 << 20
RING_BUFFERS = 3  # buffers of a ring whose rows are handed over: one filling, others being merged

Partials = Sequence[tuple[int, Partial]]

# The mergeable partials of a merged row (distributed runs: ``runfile.format.PARTIALS``), per column and
# per unit: whatever two ranks' rows hold, these merge into the statistics of both ranks' values.
PARTIAL_VALUES = len(PARTIAL_NAMES)  # count mean m2 min max numel far nonfinite
UNIT_VALUES = len(UNIT_PARTIAL_NAMES)  # count mean m2


def arrangement(partials: Partials) -> tuple:
    """A key that is equal for two steps exactly when their partials can share a layout: the
    (site, ``Partial``) pairs themselves, tuples all the way down."""
    return tuple(partials)


@dataclass
class Layout:
    """Where each quantity sits in a row of concatenated packed partials, and which site it feeds."""

    sites: int
    width: int  # length of one row of packed partials
    parts: int
    moments: torch.Tensor  # (4, E) indices of count, shift, sum, sumsq in a row
    scalars: torch.Tensor  # (P, 4) indices of min, max, far, nonfinite in a row (P: rows of scalars)
    entry_group: torch.Tensor  # (E,) group of each entry
    group_site: torch.Tensor  # (G,) site of each group
    group_is_unit: torch.Tensor  # (G,) 1.0 for real units, 0.0 for pseudo-units
    part_site: torch.Tensor  # (P,) site of each partial
    site_numel: torch.Tensor  # (S,) elements seen per site
    # the same on the host, for _cmerge: (P, 4) site, offset, entries, scalar rows of each partial;
    # (S, 3) first group, groups and whether they are units, of each site; (S,) elements per site
    host_parts: np.ndarray
    host_sites: np.ndarray
    host_numel: np.ndarray
    # with unit columns (``build(units=…)``): (S, 2) first unit column (−1: none) and units of each site,
    # their number U, and for merge_rows the unit column of each group (U: none) and each unit column's
    # value where no group fills it (0: the site is absent from the row; NaN: it has other groups)
    host_units: np.ndarray | None = None
    unit_total: int = 0
    unit_target: torch.Tensor | None = None
    unit_fill: torch.Tensor | None = None

    @classmethod
    def build(cls, partials: Partials, sites: int, device: torch.device, units: np.ndarray | None = None) -> Layout:
        """``units``: (S, 2) int64, the first unit column (−1: none) and units of each site, to merge rows
        into their mergeable partials too (``merge_partials``)."""
        group_count: dict[int, int] = {}
        has_units: dict[int, bool] = {}
        numel = [0] * sites
        for site, part in partials:
            group_count[site] = max(group_count.get(site, 0), part.entries)
            has_units[site] = has_units.get(site, False) or part.units > 0
            numel[site] += part.numel
        order = sorted(group_count)
        counts = torch.tensor([group_count[site] for site in order])
        starts = torch.cumsum(counts, 0) - counts
        start = dict(zip(order, starts.tolist()))
        group_site = torch.repeat_interleave(torch.tensor(order), counts)
        group_is_unit = torch.repeat_interleave(torch.tensor([float(has_units[site]) for site in order],
                                                             dtype=torch.float64), counts)
        # indices into the row: (4, E) for count/shift/sum/sumsq, (P, 4) for the scalars
        moments = torch.cat([torch.arange(p.offset, p.offset + 4 * p.entries).view(4, p.entries)
                             for _, p in partials], dim=1)
        scalars = torch.cat([torch.arange(p.offset + 4 * p.entries, p.offset + p.width).view(p.scalar_rows, 4)
                             for _, p in partials])
        width = partials[-1][1].offset + partials[-1][1].width
        host_sites = np.zeros((sites, 3), dtype=np.int64)
        for site in order:
            host_sites[site] = (start[site], group_count[site], has_units[site])
        unit_fields: dict = {}
        if units is not None:
            unit_fields = _unit_fields(units, host_sites, int(counts.sum()), device)
        return cls(
            sites=sites, width=width, parts=scalars.shape[0],
            moments=moments.to(device, non_blocking=True),
            scalars=scalars.to(device, non_blocking=True),
            entry_group=torch.cat([torch.arange(p.entries) + start[s] for s, p in partials]).to(
                device, non_blocking=True),
            group_site=group_site.to(device, non_blocking=True),
            group_is_unit=group_is_unit.to(device, non_blocking=True),
            part_site=_to_device([s for s, p in partials for _ in range(p.scalar_rows)], torch.int64, device),
            site_numel=_to_device(numel, torch.float64, device),
            host_parts=np.array([(s, p.offset, p.entries, p.scalar_rows) for s, p in partials], dtype=np.int64),
            host_sites=host_sites,
            host_numel=np.array(numel, dtype=np.float64),
            **unit_fields,
        )


def _unit_fields(units: np.ndarray, host_sites: np.ndarray, groups: int, device: torch.device) -> dict:
    """Where the groups of a row go among its unit columns (see ``Layout.host_units``)."""
    units = np.ascontiguousarray(units, dtype=np.int64)
    total = unit_total(units)
    target = np.full(groups, total, dtype=np.int64)
    fill = np.zeros(total, dtype=np.float64)
    for site, (first, count) in enumerate(units):
        if first < 0:
            continue
        g0, n, has = host_sites[site]
        if n == count and has:
            target[g0:g0 + n] = np.arange(first, first + count)
        elif n:
            fill[first:first + count] = np.nan
    return {"host_units": units, "unit_total": total, "unit_target": _to_device(target.tolist(), torch.int64, device),
            "unit_fill": _to_device(fill.tolist(), torch.float64, device)}


def _to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Built once per arrangement; non_blocking keeps a CUDA stream from synchronising.
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def merge_rows(layout: Layout, rows: torch.Tensor, dead_eps: float) -> torch.Tensor:
    """Statistics of n steps: rows (n, width) of packed partials → (n, S, len(STATISTICS)) float64."""
    return _merged(layout, rows, dead_eps, False)[0]


Merged = tuple[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"]


def merge_partials(layout: Layout, rows: torch.Tensor, dead_eps: float) -> Merged:
    """``merge_rows``'s statistics, and — for a layout built with ``units`` — the rows' mergeable partials:
    (n, S, PARTIAL_VALUES) per site and (n, U, UNIT_VALUES) per unit column (else None, None)."""
    return _merged(layout, rows, dead_eps, layout.host_units is not None)


def _merged(layout: Layout, rows: torch.Tensor, dead_eps: float,
            with_partials: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    n = rows.shape[0]
    count, shift, first, second = rows.index_select(1, layout.moments.view(-1)).view(n, 4, -1).unbind(1)
    scalars = rows.index_select(1, layout.scalars.view(-1)).view(n, layout.parts, 4)
    has = count > 0
    safe = torch.where(has, count, 1.0)
    mean = torch.where(has, shift + first / safe, 0.0)
    m2 = torch.where(has, (second - first * first / safe).clamp_min(0.0), 0.0)
    groups = layout.group_site.numel()
    n_group, mean_group, m2_group = _merge(count, mean, m2, layout.entry_group, groups)
    n_site, mean_site, m2_site = _merge(n_group, mean_group, m2_group, layout.group_site, layout.sites)

    std_group = torch.sqrt(m2_group / n_group)
    dead = _index_sum((std_group <= dead_eps).double() * layout.group_is_unit, layout.group_site, layout.sites)
    units = _index_sum(layout.group_is_unit.expand_as(n_group), layout.group_site, layout.sites)

    minimum = _scatter(scalars[..., 0], layout.part_site, layout.sites, "amin", torch.inf)
    maximum = _scatter(scalars[..., 1], layout.part_site, layout.sites, "amax", -torch.inf)
    far = _index_sum(scalars[..., 2], layout.part_site, layout.sites)
    nonfinite = _index_sum(scalars[..., 3], layout.part_site, layout.sites)

    numel = layout.site_numel.expand_as(n_site)
    nan = torch.full_like(n_site, torch.nan)
    some = n_site > 0
    stats = torch.stack((
        torch.where(numel > 0, n_site, nan),
        torch.where(some, mean_site, nan),
        torch.where(some, torch.sqrt(m2_site / n_site), nan),
        torch.where(some, minimum, nan),
        torch.where(some, maximum, nan),
        (numel - far) / numel,
        dead / units,
        nonfinite / numel,
    ), dim=-1)
    if not with_partials:
        return stats, None, None
    partials = torch.stack((n_site, mean_site, m2_site, torch.where(some, minimum, nan),
                            torch.where(some, maximum, nan), numel, far, nonfinite), dim=-1)
    assert layout.unit_target is not None and layout.unit_fill is not None, "a layout built with units"
    total = layout.unit_total
    unit_rows = torch.empty((n, total + 1, UNIT_VALUES), dtype=torch.float64, device=rows.device)
    unit_rows[:, :total] = layout.unit_fill[None, :, None]
    unit_rows.index_copy_(1, layout.unit_target, torch.stack((n_group, mean_group, m2_group), dim=-1))
    return stats, partials, unit_rows[:, :total]


def merge_into(layout: Layout, rows: torch.Tensor, dead_eps: float, out: np.ndarray,
               partials: np.ndarray | None = None, units: np.ndarray | None = None) -> None:
    """Statistics of n steps of CPU rows (n, width) into ``out`` (n, S, len(STATISTICS)) float64: with
    ``_cmerge`` (no lock held, no allocation per row) when it was built, else with ``merge_rows``. With
    ``partials`` (n, S, PARTIAL_VALUES) and ``units`` (n, U, UNIT_VALUES), the mergeable partials too (a
    layout built with units)."""
    with_partials = partials is not None
    if _cmerge is None or rows.device.type != "cpu":
        merged = _merged(layout, rows, dead_eps, with_partials)
        for target, values in zip((out, partials, units), merged):
            if target is not None and values is not None:
                target[...] = values.cpu().numpy()
        return
    rows = rows.contiguous()
    n = rows.shape[0]
    assert out.flags.c_contiguous and out.dtype == np.float64 and out.shape == (n, layout.sites, 8)
    extra: tuple = ()
    if with_partials:
        assert units is not None and layout.host_units is not None, "a layout built with units"
        assert partials.flags.c_contiguous and partials.shape == (n, layout.sites, PARTIAL_VALUES)
        assert units.flags.c_contiguous and units.shape == (n, layout.unit_total, UNIT_VALUES)
        extra = (partials.ctypes.data, units.ctypes.data, layout.host_units.ctypes.data, layout.unit_total)
    _cmerge.merge(rows.data_ptr(), n, rows.shape[1], layout.host_parts.ctypes.data,
                  layout.host_parts.shape[0], layout.host_sites.ctypes.data, layout.host_numel.ctypes.data,
                  layout.sites, layout.group_site.numel(), dead_eps, out.ctypes.data, *extra)


def merge_now(layout: Layout, row: torch.Tensor, dead_eps: float) -> Merged:
    """Statistics (1, S, 8) of one step from its (width,) row of packed partials, and its partials
    (``merge_partials``)."""
    return merge_partials(layout, row[None], dead_eps)


class PartialRing(RingCore):
    """Packed partials of consecutive steps with one arrangement, kept until merged together.

    With ``buffers`` > 1 the filled rows can be handed over to be merged on another thread
    (``hand_over``) while the ring goes on filling another buffer; a buffer comes back when the
    ``Segment`` made of it is released. ``filled``, ``first_row``, ``width`` and the rows' address are fields
    of ``RingCore``, which ``Recorder.seal`` reads.
    """

    def __init__(self, key: tuple, layout: Layout, capacity: int, device: torch.device, buffers: int = 1) -> None:
        self.key = key
        self.layout = layout
        self.width = layout.width
        self.capacity = capacity
        self.rows = torch.empty((capacity, layout.width), dtype=torch.float64, device=device)
        self._on_cpu = device.type == "cpu"
        self._pointer = self.rows.data_ptr()
        self.first_row = 0
        self.filled = 0
        self._buffers = buffers
        self._made = 1
        self._returned: queue.SimpleQueue[torch.Tensor] = queue.SimpleQueue()

    @staticmethod
    def capacity_for(layout: Layout, rows: int, buffers: int = 1) -> int:
        return max(0, min(rows, RING_BYTES // (buffers * 8 * layout.width)))

    @property
    def full(self) -> bool:
        return self.filled >= self.capacity

    def add(self, row: torch.Tensor) -> None:
        self.rows[self.filled].copy_(row)
        self.filled += 1

    def follows(self, index: int) -> bool:
        """Whether row ``index`` of the flush interval can be the ring's next: there is room, and the ring is empty
        or its rows end just before it."""
        return self.filled < self.capacity and (not self.filled or self.first_row + self.filled == index)

    def take_from(self, arena: Arena, index: int) -> None:
        """The arena's row (the step's packed partials) as the ring's next row, row ``index`` of the flush interval
        (``follows(index)``); the arena is left empty, and aimed
        (``Arena.aim``) at the row after it where there is one, on the CPU, in a ring whose rows are handed over:
        a next step arranged as this one writes its partials there in place, with no copy. Else the row is
        copied: on the CPU one ``memmove`` (the torch operations of ``add`` cost ~25 µs each in a step that
        left the caches cold)."""
        width = self.width
        if arena.used != width:
            raise ValueError(f"a row of {arena.used} partials for a ring of rows of {width}")
        if self.filled >= self.capacity:
            raise IndexError(f"the ring holds {self.capacity} rows already")
        if not self.filled:
            self.first_row = index
        address = self._pointer + 8 * width * self.filled
        if not self._on_cpu or not arena.on_cpu:
            self.add(arena.row())
        else:
            if arena.pointer != address:  # else written there already
                _copy(address, arena.pointer, 8 * width)
            self.filled += 1
        arena.clear()
        self.aim(arena)

    def aim(self, arena: Arena) -> None:
        """Aim the empty ``arena`` at the ring's next row (see ``take_from``), or back at its own buffer (also
        when its kernels add into it: a ring's rows are not zeros)."""
        width = self.width
        if (self._on_cpu and arena.on_cpu and self._buffers > 1 and self.filled < self.capacity
                and not arena.zero_on_clear):
            arena.aim(self.rows, self._pointer + 8 * width * self.filled, width)
        else:
            arena.unaim()

    def merge(self, dead_eps: float) -> Merged:
        """(filled, S, 8) statistics of the rows gathered so far, and their partials (``merge_partials``);
        empties the ring."""
        n, self.filled = self.filled, 0
        return merge_partials(self.layout, self.rows[:n], dead_eps)

    def hand_over(self, dead_eps: float) -> Segment | None:
        """The rows gathered so far, to be merged elsewhere; the ring goes on in a free buffer. None
        (and the ring unchanged) when every buffer is still out."""
        try:
            fresh = self._returned.get_nowait()
        except queue.Empty:
            if self._made >= self._buffers:
                return None
            fresh = torch.empty_like(self.rows)
            self._made += 1
        segment = Segment(self.layout, self.rows, self.first_row, self.filled, dead_eps, self._returned.put)
        self.rows, self.filled = fresh, 0
        self._pointer = fresh.data_ptr()
        return segment


@dataclass
class Segment:
    """Rows first_row … first_row + n − 1 of a flush interval, as packed partials still to merge."""

    layout: Layout
    buffer: torch.Tensor | None  # (capacity, width): the first n rows are this segment's; None once released
    first_row: int
    n: int
    dead_eps: float
    _give_back: Callable[[torch.Tensor], None]

    def merge_into(self, stats: np.ndarray, partials: np.ndarray | None = None, units: np.ndarray | None = None) -> None:
        """Write the statistics into ``stats`` (the flush interval's rows, (rows, S, 8)), and the partials
        into ``partials`` and ``units`` when given; release the buffer."""
        rows = slice(self.first_row, self.first_row + self.n)
        try:
            merge_into(self.layout, self.buffer[:self.n], self.dead_eps, stats[rows],
                       None if partials is None else partials[rows], None if units is None else units[rows])
        finally:
            self.release()

    @property
    def nbytes(self) -> int:
        return 0 if self.buffer is None else self.buffer.numel() * self.buffer.element_size()

    def release(self) -> None:
        if self.buffer is not None:
            self._give_back(self.buffer)
            self.buffer = None


def _index_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.zeros(values.shape[:-1] + (size,), dtype=values.dtype, device=values.device)
    return out.index_add_(-1, index, values)


def _scatter(values: torch.Tensor, index: torch.Tensor, size: int, reduce: str, initial: float) -> torch.Tensor:
    out = torch.full(values.shape[:-1] + (size,), initial, dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(-1, index.expand_as(values), values, reduce=reduce, include_self=True)


def _merge(count: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor, index: torch.Tensor,
           size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge (count, mean, M2) of members (last dim) into groups: the parallel variance formula."""
    n = _index_sum(count, index, size)
    has = n > 0
    group_mean = torch.where(has, _index_sum(count * mean, index, size) / torch.where(has, n, 1.0), 0.0)
    spread = mean - group_mean.index_select(-1, index)
    m2_total = _index_sum(m2, index, size) + _index_sum(count * spread * spread, index, size)
    return n, group_mean, m2_total
