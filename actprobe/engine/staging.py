"""Rows of statistics on the device, and their asynchronous trip to the host.

Each recorded step writes one row into a device buffer. A flush copies the filled rows into a free
host slot (pinned memory on CUDA) with ``non_blocking=True``, records an event, and hands the slot to
the writer thread, which waits on the event. The training thread never waits: when every slot is
still busy (the disk is slower than training), the rows are dropped and counted.

Rows of CPU tensors arrive as ``Segment``s of packed partials instead (``defer``): the writer thread
merges them into the host slot before it writes, so that the training thread does no merging.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence

import numpy as np
import torch

from ..runfile.format import STATISTICS
from ..stats.cores import StageCore
from ..stats.merge import PARTIAL_VALUES, UNIT_VALUES, Merged, Segment

HOST_SLOTS = 3  # at least this many host slots; more when they are small, up to MAX_HOST_SLOTS
MAX_HOST_SLOTS = 32
HOST_SLOT_BUDGET = 8 << 20  # bytes of host slots beyond the first HOST_SLOTS: small flushes get more slots
# The most bytes of mergeable partials (distributed runs) that one stage (and each host slot) holds: a model
# with many units flushes more often instead (1000 sites of 64 units: 1.6 MB a row, 10 rows a flush)
PARTIALS_BYTES = 16 << 20
# Scalar columns a stage has room for: names passed to probe.step() at any step get one, in order of
# their first appearance (the file gains the column then)
MAX_SCALARS = 64


def partial_bytes(sites: int, units: int | None) -> int:
    """Bytes of mergeable partials per row: 0 without them."""
    return 0 if units is None else 8 * (sites * PARTIAL_VALUES + units * UNIT_VALUES)


def stage_capacity(rows: int, sites: int, units: int | None) -> int:
    """Rows a stage holds: ``rows`` (a flush's), fewer when their partials would pass PARTIALS_BYTES."""
    per_row = partial_bytes(sites, units)
    return rows if not per_row else max(1, min(rows, PARTIALS_BYTES // per_row))


def host_slots(capacity: int, sites: int, scalars: int, units: int | None = None) -> int:
    """How many host slots a stage gets: more when each is small (``flush_every=1`` at a fast step
    rate), so that the writer thread, which commits whatever queued up as one append, can catch up."""
    slot_bytes = capacity * (8 * (sites * len(STATISTICS) + scalars) + partial_bytes(sites, units))
    return max(HOST_SLOTS, min(MAX_HOST_SLOTS, HOST_SLOT_BUDGET // max(slot_bytes, 1)))


def _wait_for(event: torch.cuda.Event) -> None:
    """Wait (on the writer thread) until the copies before ``event`` are done. Polling instead of
    ``event.synchronize()`` keeps even the writer clear of CUDA's synchronising calls, so that
    ``torch.cuda.set_sync_debug_mode("error")`` can watch a whole training run."""
    while not event.query():
        time.sleep(0.0002)


class _HostSlot:
    def __init__(self, capacity: int, sites: int, scalars: int, device: torch.device, units: int | None) -> None:
        pin = device.type == "cuda"
        self.stats = torch.empty((capacity, sites, len(STATISTICS)), dtype=torch.float64, pin_memory=pin)
        self.scalars = torch.empty((capacity, scalars), dtype=torch.float64, pin_memory=pin)
        self.partials = self.units = None
        if units is not None:  # a rank of a distributed run: the mergeable partials come along
            self.partials = torch.empty((capacity, sites, PARTIAL_VALUES), dtype=torch.float64, pin_memory=pin)
            self.units = torch.empty((capacity, units, UNIT_VALUES), dtype=torch.float64, pin_memory=pin)


class StagedRows:
    """Rows on their way to the host, as the writer thread takes them (``runfile.writer.Batch``)."""

    def __init__(self, stage: RowStage, slot: _HostSlot, n: int, event: torch.cuda.Event | None,
                 segments: list[Segment], hists: list[tuple[int, torch.Tensor]] | None = None) -> None:
        # the stage starts new lists: these are the batch's, made arrays on the writer thread (``steps``, ``times``)
        self._steps, self._times, self._host_rows = stage._steps, stage._times, stage._host_rows
        self.scalar_names = list(stage.scalar_names)  # the columns of scalars(), in order (names only grow)
        # which values came from device tensors (in the slot's scalars); None: none did
        self._from_device = stage._from_device[:n].copy() if stage.device_scalars else None
        self._free = stage._free
        self._slot, self._n, self._event, self._segments = slot, n, event, segments
        self._hists = hists or []

    @property
    def steps(self) -> np.ndarray:
        return np.array(self._steps, dtype=np.int64)

    @property
    def times(self) -> np.ndarray:
        return np.array(self._times, dtype=np.float64)

    def ready(self) -> None:
        """On the writer thread: wait for the copies, then merge the segments into the slot. Once."""
        if self._event is not None:
            _wait_for(self._event)
            self._event = None
        stats = self._slot.stats.numpy()
        slot = self._slot
        partials, units = (None, None) if slot.partials is None else (slot.partials.numpy(), slot.units.numpy())
        while self._segments:
            self._segments.pop(0).merge_into(stats, partials, units)

    def stats(self) -> np.ndarray:
        return self._slot.stats[:self._n].numpy()

    def partials(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The rows' mergeable partials, (n, C, PARTIAL_VALUES) and (n, U, UNIT_VALUES), when the stage
        keeps them (a rank of a distributed run)."""
        slot = self._slot
        if slot.partials is None or slot.units is None:
            return None
        return slot.partials[:self._n].numpy(), slot.units[:self._n].numpy()

    def hist(self) -> list[tuple[int, np.ndarray]]:
        """The histogram rows: (row within this batch, (columns, bins) counts)."""
        return [(row, counts.numpy()) for row, counts in self._hists]

    def scalars(self) -> np.ndarray:
        m = len(self.scalar_names)
        host = np.full((self._n, m), np.nan)
        for row, values in enumerate(self._host_rows):
            for column, value in values:
                host[row, column] = value
        if self._from_device is None:
            return host
        return np.where(self._from_device[:, :m], self._slot.scalars[:self._n, :m].numpy(), host)

    def release(self) -> None:
        for segment in self._segments:
            segment.release()
        self._free.put(self._slot)


class RowStage(StageCore):
    """The device rows of the current flush interval and the host slots they are copied to. ``rows``,
    ``capacity``, ``deferred_bytes``, the scalar columns and the lists of host values are fields of ``StageCore``,
    which ``Recorder.seal`` appends to."""

    def __init__(self, capacity: int, sites: int, scalar_names: Sequence[str], device: torch.device,
                 units: int | None = None) -> None:
        """``units``: keep each row's mergeable partials too, with this many unit columns (distributed runs)."""
        self.capacity = capacity
        self.device = device
        self.scalar_names: list[str] = []
        self.scalar_index: dict[str, int] = {}
        for name in scalar_names:
            self.add_scalar(name)
        m = MAX_SCALARS
        self._stats = torch.full((capacity, sites, len(STATISTICS)), torch.nan, dtype=torch.float64, device=device)
        self._partials = self._units = None
        if units is not None:
            self._partials = torch.full((capacity, sites, PARTIAL_VALUES), torch.nan, dtype=torch.float64, device=device)
            self._units = torch.full((capacity, units, UNIT_VALUES), torch.nan, dtype=torch.float64, device=device)
        self._device_scalars = torch.full((capacity, m), torch.nan, dtype=torch.float64, device=device)
        self._from_device = np.zeros((capacity, m), dtype=bool)
        self.device_scalars = False  # whether a row of this interval has a value from a device tensor
        # each row's step, time and host scalars ((column, value) pairs), in lists: a numpy element costs ~3 µs
        # to write at the end of a step that left the caches cold, a list's a fraction of that
        self._steps: list[int] = []
        self._times: list[float] = []
        self._host_rows: list[list[tuple[int, float]]] = []
        self.rows = 0
        self.dropped_rows = 0
        self._segments: list[Segment] = []
        self.deferred_bytes = 0  # memory held by the segments of this interval
        self._hists: list[tuple[int, torch.Tensor]] = []  # (row, (columns, bins) counts) of histogram rows
        self._free: queue.SimpleQueue[_HostSlot] = queue.SimpleQueue()
        for _ in range(host_slots(capacity, sites, m, units)):
            self._free.put(_HostSlot(capacity, sites, m, device, units))

    @property
    def full(self) -> bool:
        return self.rows >= self.capacity

    def add_scalar(self, name: str) -> bool:
        """Give ``name`` a scalar column (its earlier rows are NaN); False when all MAX_SCALARS are taken."""
        if name in self.scalar_index:
            return True
        if len(self.scalar_names) >= MAX_SCALARS:
            return False
        self.scalar_index[name] = len(self.scalar_names)
        self.scalar_names.append(name)
        return True

    def add_row(self, step: int, elapsed: float, scalars: dict[str, float | torch.Tensor]) -> int:
        """Start a row; its statistics follow through ``set_stats``. Returns the row's index."""
        # the values first, the row after: reading a tensor may run Python code (a TorchFunctionMode's), a flush too
        host, on_device = [], []
        for name, value in scalars.items():
            column = self.scalar_index[name]
            if isinstance(value, torch.Tensor) and value.is_cpu:
                # a CPU tensor is read where it lies (no device to wait for): one host write, where the
                # device path's indexing and copies cost ~50 µs in a step that left the caches cold
                host.append((column, value.item()))  # item() records nothing for autograd
            elif isinstance(value, torch.Tensor):
                on_device.append((column, value.detach().reshape(()).to(self.device, non_blocking=True)))
            else:
                host.append((column, float(value)))
        row = self.rows
        for column, value in on_device:
            self._device_scalars[row, column].copy_(value)
            self._from_device[row, column] = True
            self.device_scalars = True
        self._steps.append(step)
        self._times.append(elapsed)
        self._host_rows.append(host)
        self.rows += 1
        return row

    def set_stats(self, first_row: int, merged: Merged) -> None:
        """Statistics (n, S, 8) of rows first_row … first_row + n − 1, and their partials (kept when the
        stage keeps them)."""
        stats, partials, units = merged
        rows = slice(first_row, first_row + stats.shape[0])
        self._stats[rows].copy_(stats)
        if self._partials is not None and self._units is not None and partials is not None and units is not None:
            self._partials[rows].copy_(partials)
            self._units[rows].copy_(units)

    def add_hist(self, row: int, counts: torch.Tensor) -> None:
        """A histogram row for row ``row`` of this interval (counts on the device)."""
        self._hists.append((row, counts))

    def defer(self, segment: Segment) -> None:
        """Rows whose statistics the writer thread merges from packed partials (CPU rows only)."""
        self._segments.append(segment)
        self.deferred_bytes += segment.nbytes

    def take(self) -> StagedRows | None:
        """Start copying the filled rows to the host; None if nothing is filled or no slot is free."""
        n = self.rows
        if n == 0:
            return None
        self.rows = 0
        segments, self._segments = self._segments, []
        hists, self._hists = self._hists, []
        self.deferred_bytes = 0
        try:
            slot = self._free.get_nowait()
        except queue.Empty:
            self.dropped_rows += n
            self._reset_scalars(n)
            for segment in segments:
                segment.release()
            return None
        if sum(segment.n for segment in segments) != n:  # rows merged at once are copied; deferred ones, not
            slot.stats[:n].copy_(self._stats[:n], non_blocking=True)
            if slot.partials is not None and self._partials is not None:
                slot.partials[:n].copy_(self._partials[:n], non_blocking=True)
                slot.units[:n].copy_(self._units[:n], non_blocking=True)
        if self.device_scalars:
            slot.scalars[:n].copy_(self._device_scalars[:n], non_blocking=True)
        if self.device.type == "cuda":  # histogram rows come along, copied before the event like the rest
            hists = [(row, torch.empty(counts.shape, dtype=counts.dtype, pin_memory=True).copy_(counts, non_blocking=True))
                     for row, counts in hists]
        event = None
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        rows = StagedRows(self, slot, n, event, segments, hists)
        self._reset_scalars(n)
        return rows

    def _reset_scalars(self, n: int) -> None:
        if self.device_scalars:
            self._device_scalars[:n].fill_(torch.nan)
            self._from_device[:n] = False
            self.device_scalars = False
        self._steps, self._times, self._host_rows = [], [], []
