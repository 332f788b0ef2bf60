"""Rows of statistics on the device, and their asynchronous trip to the host.

Each recorded step writes one row into a device buffer. A flush copies the filled rows into a free
host slot (pinned memory on CUDA) with ``non_blocking=True``, records an event, and hands the slot to
the writer thread, which waits on the event. The training thread never waits: when every slot is
still busy (the disk is slower than training), the rows are dropped and counted.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence

import numpy as np
import torch

from .format import STATISTICS
from .writer import Batch

HOST_SLOTS = 3


def _wait_for(event: torch.cuda.Event) -> None:
    """Wait (on the writer thread) until the copies before ``event`` are done. Polling instead of
    ``event.synchronize()`` keeps even the writer clear of CUDA's synchronising calls, so that
    ``torch.cuda.set_sync_debug_mode("error")`` can watch a whole training run."""
    while not event.query():
        time.sleep(0.0002)


class _HostSlot:
    def __init__(self, capacity: int, sites: int, scalars: int, device: torch.device) -> None:
        pin = device.type == "cuda"
        self.stats = torch.empty((capacity, sites, len(STATISTICS)), dtype=torch.float64, pin_memory=pin)
        self.scalars = torch.empty((capacity, scalars), dtype=torch.float64, pin_memory=pin)


class RowStage:
    """The device rows of the current flush interval and the host slots they are copied to."""

    def __init__(self, capacity: int, sites: int, scalar_names: Sequence[str], device: torch.device) -> None:
        self.capacity = capacity
        self.device = device
        self.scalar_names = list(scalar_names)
        self.scalar_index = {name: i for i, name in enumerate(self.scalar_names)}
        m = len(self.scalar_names)
        self._stats = torch.full((capacity, sites, len(STATISTICS)), torch.nan, dtype=torch.float64, device=device)
        self._device_scalars = torch.full((capacity, m), torch.nan, dtype=torch.float64, device=device)
        self._host_scalars = np.full((capacity, m), np.nan)
        self._from_device = np.zeros((capacity, m), dtype=bool)
        self._steps = np.zeros(capacity, dtype=np.int64)
        self._times = np.zeros(capacity, dtype=np.float64)
        self.rows = 0
        self.dropped_rows = 0
        self._free: queue.SimpleQueue[_HostSlot] = queue.SimpleQueue()
        for _ in range(HOST_SLOTS):
            self._free.put(_HostSlot(capacity, sites, m, device))

    @property
    def full(self) -> bool:
        return self.rows >= self.capacity

    def add_row(self, step: int, elapsed: float, scalars: dict[str, float | torch.Tensor]) -> int:
        """Start a row; its statistics follow through ``set_stats``. Returns the row's index."""
        row = self.rows
        self._steps[row] = step
        self._times[row] = elapsed
        for name, value in scalars.items():
            column = self.scalar_index[name]
            if isinstance(value, torch.Tensor):
                self._device_scalars[row, column].copy_(value.detach().reshape(()).to(self.device, non_blocking=True))
                self._from_device[row, column] = True
            else:
                self._host_scalars[row, column] = value
        self.rows += 1
        return row

    def set_stats(self, first_row: int, stats: torch.Tensor) -> None:
        """Statistics (n, S, 8) of rows first_row … first_row + n − 1."""
        self._stats[first_row:first_row + stats.shape[0]].copy_(stats)

    def take(self) -> Batch | None:
        """Start copying the filled rows to the host; None if nothing is filled or no slot is free."""
        n = self.rows
        if n == 0:
            return None
        self.rows = 0
        try:
            slot = self._free.get_nowait()
        except queue.Empty:
            self.dropped_rows += n
            self._reset_scalars(n)
            return None
        slot.stats[:n].copy_(self._stats[:n], non_blocking=True)
        slot.scalars[:n].copy_(self._device_scalars[:n], non_blocking=True)
        event = None
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        host_scalars = self._host_scalars[:n].copy()
        from_device = self._from_device[:n].copy()
        self._reset_scalars(n)
        return Batch(
            steps=self._steps[:n].copy(),
            times=self._times[:n].copy(),
            ready=(lambda: _wait_for(event)) if event is not None else (lambda: None),
            stats=lambda: slot.stats[:n].numpy(),
            scalars=lambda: np.where(from_device, slot.scalars[:n].numpy(), host_scalars),
            release=lambda: self._free.put(slot),
        )

    def _reset_scalars(self, n: int) -> None:
        self._device_scalars[:n].fill_(torch.nan)
        self._host_scalars[:n] = np.nan
        self._from_device[:n] = False
