"""Where kernels put their results: a ``Partial`` per tensor, packed side by side in the step's ``Arena``.

A ``Partial`` holds, for each *entry* (a unit, or the whole tensor as one pseudo-unit when its
output has no units), the number of finite values, a shift (one of the entry's own values) and the
sums of (x − shift) and (x − shift)²; then rows of four scalars: min, max, the number of values with
|x| > eps (non-finite ones included) and the number of non-finite values.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .cores import ArenaCore


class Partial(NamedTuple):
    """Moments of one tensor, packed as float64 in the step's ``Arena`` from ``offset`` on:
    count[E] shift[E] sum[E] sumsq[E], then ``scalar_rows`` times (min max far nonfinite).

    A tuple, so that a step's arrangement (``merge.arrangement``) is hashed and compared in C."""

    offset: int
    entries: int  # E: the units, or 1 pseudo-unit
    units: int  # number of real units (E), 0 when the output has none
    numel: int
    scalar_rows: int = 1  # the Triton kernel leaves one row of scalars per program

    @property
    def width(self) -> int:
        return 4 * self.entries + 4 * self.scalar_rows


class Arena(ArenaCore):
    """The packed partials of the step in progress, side by side in one float64 buffer on one device.

    Kernels write into it directly (the C kernel through a pointer), so that a step costs no
    allocation per site and its partials are one contiguous row, ready to merge. On the CPU an empty arena
    can be aimed at the row of a ``merge.PartialRing`` that the step's partials will fill if they are
    arranged as the last step's (``aim``): then they are written there in place, with no copy at the end.
    ``used``, ``size``, ``pointer`` and the flags are fields of ``ArenaCore``, which the C hooks read.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.on_cpu = device.type == "cpu"
        self._buffer: torch.Tensor | None = torch.zeros(4096, dtype=torch.float64, device=device)
        self.pointer = self._buffer.data_ptr()  # the buffer's address, kept: step() copies from it with no torch call
        self.size = self._buffer.numel()
        self.used = 0
        self.zero_on_clear = False  # set by kernels that add into the arena (atomics need zeros)
        self._own = self._buffer  # the arena's own buffer, whatever it is aimed at
        self._base = self._own  # the tensor whose memory the arena's buffer is
        self.aimed = False
        self._retired: list[torch.Tensor] = []  # memory given up by reserve() during the step

    @property
    def buffer(self) -> torch.Tensor:
        """The memory partials are written into, a (size,) float64 view."""
        if self._buffer is None:  # aimed: the view is made when something asks for it (no torch call per step)
            start = (self.pointer - self._base.data_ptr()) // 8
            self._buffer = self._base.view(-1)[start:start + self.size]
        return self._buffer

    def aim(self, base: torch.Tensor, pointer: int, size: int) -> None:
        """Write the next partials at ``pointer``, where ``size`` float64 values of the contiguous float64 tensor
        ``base`` lie (the arena is empty), until they are full (``reserve`` then goes on in the arena's own
        buffer) or the arena is aimed elsewhere."""
        self._base, self._buffer, self.pointer, self.size, self.aimed = base, None, pointer, size, True

    def unaim(self) -> None:
        """Back to the arena's own buffer, taking along what it holds (the row it was aimed at may be given away)."""
        if not self.aimed:
            return
        if self.used > self._own.numel():
            self._own = torch.zeros(max(2 * self._own.numel(), self.used), dtype=torch.float64, device=self.device)
        if self.used:
            self._own[:self.used].copy_(self.buffer[:self.used])
        self._base = self._buffer = self._own
        self.pointer, self.size, self.aimed = self._own.data_ptr(), self._own.numel(), False

    def reserve(self, width: int) -> int:
        """Room for ``width`` values; returns its offset. May move the buffer: take pointers after.

        Memory past ``used`` is zero whenever ``zero_on_clear`` is set.
        """
        offset = self.used
        if offset + width > self.size:
            grown = torch.zeros(max(2 * self.size, offset + width), dtype=torch.float64, device=self.device)
            grown[:offset].copy_(self.buffer[:offset])
            # the old memory stays until the step ends: a kernel on another thread (one that let this thread run)
            # may still be writing into it, and must not write into freed memory
            self._retired.append(self._base)
            self._buffer = self._own = self._base = grown
            self.pointer = grown.data_ptr()
            self.size = grown.numel()
            self.aimed = False
        self.used = offset + width
        return offset

    def row(self) -> torch.Tensor:
        """The packed partials written since the last ``clear``, as one (width,) view."""
        return self.buffer[:self.used]

    def clear(self) -> None:
        if self.zero_on_clear:
            self.buffer[:self.used].zero_()  # one memset per step, ordered after the row's last reader
        self.used = 0
        if self._retired:
            self._retired = []


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype values are summed in: float64 for float64 inputs, float32 for every other float."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def near_zero_bound(eps: float, dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` that is ≤ eps, so that |x| ≤ eps can be tested in ``dtype``."""
    if dtype == torch.float64:
        return eps
    bound = np.float32(eps)
    if float(bound) > eps:
        bound = np.nextafter(bound, np.float32(0))
    return float(bound)
