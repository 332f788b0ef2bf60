"""Statistics kernels: the moments of one activation tensor, computed on its own device.

A kernel turns a tensor into a ``Partial``: for each *entry* (a unit, or the whole tensor as one
pseudo-unit when its output has no units) the number of finite values, a shift (one of the entry's own values) and the
sums of (x − shift) and (x − shift)²; and four scalars: min, max, the number of values with
|x| > eps (non-finite ones included) and the number of non-finite values. Partials of all sites of
a step are merged later, in a handful of batched operations (``reduce.py``).

Shifting by one of the entry's own values keeps the squares from cancelling when the mean is far
from zero (the shifted-data algorithm): a tensor whose mean is 10,000 times its std keeps a relative
error near 1e-7. Half-precision inputs are summed in float32, float64 in float64.

Two implementations produce the same numbers:

- on the CPU, the C extension ``actprobe._cstats`` reads each value once (vector instructions,
  blocks of at most 256 values summed in float32 and the blocks in float64); a second, masked pass
  runs only when the tensor holds NaN or ±Inf;
- on every other device, torch operations that mask non-finite values; they never read a device
  value on the host, so they never synchronise. On a CPU where the extension could not be built,
  the same torch kernel runs, after a cheaper unmasked pass that is kept when every value is finite.

Kernels write into the step's ``Arena``, one packed float64 block per tensor, without allocating.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

try:
    from . import _cstats
except ImportError:  # built without a C compiler: the torch kernel serves the CPU too
    _cstats = None

# ACTPROBE_KERNEL=torch forces the torch kernel everywhere (for comparisons and benchmarks);
# ACTPROBE_KERNEL=triton the Triton kernel everywhere (on the CPU with TRITON_INTERPRET=1: for tests).
_KERNEL_CHOICE = os.environ.get("ACTPROBE_KERNEL", "auto")
_C_WANTED = _KERNEL_CHOICE not in ("torch", "triton")
_TRITON_WANTED = _KERNEL_CHOICE != "torch"
_TRITON_EVERYWHERE = _KERNEL_CHOICE == "triton"
_triton_module: object | None = None
_triton_failed = False


def triton_kernel_module() -> object | None:
    """``actprobe.triton_kernel``, imported on first need; None when Triton is not installed."""
    global _triton_module, _triton_failed
    if _triton_module is None and not _triton_failed:
        try:
            from . import triton_kernel
        except ImportError:
            _triton_failed = True
        else:
            _triton_module = triton_kernel
    return _triton_module


@dataclass(slots=True)
class Partial:
    """Moments of one tensor, packed as float64 in the step's ``Arena`` from ``offset`` on:
    count[E] shift[E] sum[E] sumsq[E], then ``scalar_rows`` times (min max far nonfinite)."""

    offset: int
    entries: int  # E: the units, or 1 pseudo-unit
    units: int  # number of real units (E), 0 when the output has none
    numel: int
    scalar_rows: int = 1  # the Triton kernel leaves one row of scalars per program

    @property
    def width(self) -> int:
        return 4 * self.entries + 4 * self.scalar_rows


class Arena:
    """The packed partials of the step in progress, side by side in one float64 buffer on one device.

    Kernels write into it directly (the C kernel through a pointer), so that a step costs no
    allocation per site and its partials are one contiguous row, ready to merge.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.buffer = torch.zeros(4096, dtype=torch.float64, device=device)
        self.used = 0
        self.zero_on_clear = False  # set by kernels that add into the arena (atomics need zeros)

    def reserve(self, width: int) -> int:
        """Room for ``width`` values; returns its offset. May move the buffer: take pointers after.

        Memory past ``used`` is zero whenever ``zero_on_clear`` is set.
        """
        offset = self.used
        if offset + width > self.buffer.numel():
            grown = torch.zeros(max(2 * self.buffer.numel(), offset + width), dtype=torch.float64,
                                device=self.device)
            grown[:offset].copy_(self.buffer[:offset])
            self.buffer = grown
        self.used = offset + width
        return offset

    def row(self) -> torch.Tensor:
        """The packed partials written since the last ``clear``, as one (width,) view."""
        return self.buffer[:self.used]

    def clear(self) -> None:
        if self.zero_on_clear:
            self.buffer[:self.used].zero_()  # one memset per step, ordered after the row's last reader
        self.used = 0


@dataclass
class _Plan:
    """How to compute one (shape, dtype, device, unit_dim): cached per kernel."""

    view_shape: tuple[int, int, int]  # (A, E, B): moments per entry, over A and B
    channels_last: bool
    contiguous: bool  # the memory is already (A, E, B) row-major (contiguous or channels-last)
    units: int
    dtype: torch.dtype  # the dtype the values are summed in
    near_bound: float  # the largest value of dtype that is ≤ near_zero_eps
    use_c: bool
    triton: object | None = None  # a triton_kernel.TritonPlan when the Triton kernel serves this tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def near_zero_bound(eps: float, dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` that is ≤ eps, so that |x| ≤ eps can be tested in ``dtype``."""
    if dtype == torch.float64:
        return eps
    bound = np.float32(eps)
    if float(bound) > eps:
        bound = np.nextafter(bound, np.float32(0))
    return float(bound)


class MomentKernel:
    """Computes ``Partial``s.

    Args:
        near_zero_eps: the near-zero threshold.
        use_c: use the C extension for CPU tensors when it is available; the default is on
            unless the environment variable ACTPROBE_KERNEL is ``torch``.
        use_triton: None (default): the Triton kernel for CUDA tensors when Triton is installed,
            unless ACTPROBE_KERNEL is ``torch``; True: for every tensor (CPU tensors need Triton's
            interpreter, ``TRITON_INTERPRET=1``: for tests); False: never.
        cpu_shortcut: without the C extension, try an unmasked torch pass first on the CPU (tests
            turn it off to run the masked kernel that other devices use).
    """

    def __init__(self, near_zero_eps: float, *, use_c: bool = _C_WANTED, cpu_shortcut: bool = True,
                 use_triton: bool | None = True if _TRITON_EVERYWHERE else None) -> None:
        self.near_zero_eps = near_zero_eps
        self.use_c = use_c and _cstats is not None
        self.cpu_shortcut = cpu_shortcut
        self.use_triton = use_triton
        self._plans: dict[tuple, _Plan] = {}
        self._scratch: dict[torch.dtype, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, unit_dim: int | None, arena: Arena) -> Partial:
        """Write the moments of ``x`` (detached) into ``arena``; return where they are."""
        key = (x.shape, x.dtype, x.device, unit_dim, x.is_contiguous())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(x, unit_dim)
        entries = plan.view_shape[1]
        if plan.triton is not None:
            return self._triton(x, plan, arena)
        width = 4 * entries + 4
        offset = arena.reserve(width)
        if plan.use_c and arena.device.type == "cpu":
            self._c(x, plan, arena.buffer.data_ptr() + 8 * offset)
        elif plan.use_c:
            packed = torch.empty(width, dtype=torch.float64)
            self._c(x, plan, packed.data_ptr())
            arena.buffer[offset:offset + width].copy_(packed, non_blocking=True)
        else:
            view = self._view(x, plan)
            packed = self._torch_unmasked_cpu(view, plan) if self.cpu_shortcut and x.device.type == "cpu" else None
            if packed is None:
                packed = self._torch(view, plan)
            arena.buffer[offset:offset + width].copy_(packed, non_blocking=True)
        return Partial(offset, entries, plan.units, x.numel())

    @staticmethod
    def _view(x: torch.Tensor, plan: _Plan) -> torch.Tensor:
        return (x.permute(0, 2, 3, 1) if plan.channels_last else x).reshape(plan.view_shape)

    def _plan(self, x: torch.Tensor, unit_dim: int | None) -> _Plan:
        shape, channels_last = _entries_shape(x, unit_dim)
        entries = shape[1]
        units = 0 if unit_dim is None or x.ndim <= 1 else entries
        dtype = compute_dtype(x.dtype)
        contiguous = x.is_contiguous() or (channels_last and x.is_contiguous(memory_format=torch.channels_last))
        plan = _Plan(view_shape=shape, channels_last=channels_last, contiguous=contiguous,
                     units=units, dtype=dtype, near_bound=near_zero_bound(self.near_zero_eps, dtype),
                     use_c=self.use_c and x.device.type == "cpu")
        wanted = self.use_triton if self.use_triton is not None else (_TRITON_WANTED and x.device.type == "cuda")
        module = triton_kernel_module() if wanted else None
        if module is not None:
            view = self._view(x, plan)
            if view.data_ptr() == x.data_ptr():  # a view of x's memory: read in place, no copy
                view_shape, strides = _triton_geometry(view)
                plan.triton = module.TritonPlan(view_shape, strides, x.device, x.dtype)
        return plan

    def _triton(self, x: torch.Tensor, plan: _Plan, arena: Arena) -> Partial:
        """The one-pass Triton kernel: adds into zeroed arena memory, so the arena zeroes on clear."""
        triton_plan = plan.triton
        entries = plan.view_shape[1]
        offset = arena.reserve(4 * entries + 4 * triton_plan.programs)
        arena.zero_on_clear = True
        buffer = arena.buffer
        triton_plan.launch(x, buffer[offset:offset + 4 * entries],
                           buffer[offset + 4 * entries:offset + 4 * entries + 4 * triton_plan.programs],
                           plan.near_bound)
        return Partial(offset, entries, plan.units, x.numel(), triton_plan.programs)

    def _c(self, x: torch.Tensor, plan: _Plan, out_pointer: int) -> None:
        """The C kernel: reads the memory of ``x`` in place when it is laid out as (A, E, B)."""
        if x.dtype != plan.dtype or not plan.contiguous:
            view = self._view(x, plan)
            converted = self._scratch_for(view.numel(), plan.dtype).view(view.shape)
            x = converted.copy_(view)
        a, e, b = plan.view_shape
        args = (plan.dtype == torch.float64, x.data_ptr(), a, e, b, plan.near_bound, out_pointer)
        if not _cstats.moments(*args):
            _cstats.masked(*args)

    def _scratch_for(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        buffer = self._scratch.get(dtype)
        if buffer is None or buffer.numel() < numel:
            buffer = self._scratch[dtype] = torch.empty(numel, dtype=dtype)
        return buffer[:numel]

    def release_memory(self) -> None:
        """Drop cached scratch memory and plans."""
        self._scratch.clear()
        self._plans.clear()

    @staticmethod
    def _torch_unmasked_cpu(view: torch.Tensor, plan: _Plan) -> torch.Tensor | None:
        """CPU without the C kernel: fewer passes, assuming finite values; None when they are not."""
        values = view.to(plan.dtype)
        minimum, maximum = torch.aminmax(values)
        if not math.isfinite(float(maximum - minimum)):  # a CPU value: reading it costs no synchronisation
            return None
        shift = values[0, :, 0]
        centred = values - shift[None, :, None]
        total = centred.sum(dim=(0, 2))
        squares = centred.square_().sum(dim=(0, 2))
        far = (values.abs() > plan.near_bound).sum().to(plan.dtype)
        count = torch.full_like(shift, values.numel() // values.shape[1])
        scalars = torch.stack((minimum, maximum, far, torch.zeros_like(far)))
        return torch.cat((count, shift, total, squares, scalars)).double()

    def _torch(self, view: torch.Tensor, plan: _Plan) -> torch.Tensor:
        """The masked moments with torch operations; never reads a device value on the host."""
        dtype = plan.dtype
        values = view.to(dtype)
        finite = torch.isfinite(values)
        zero = torch.zeros((), dtype=dtype, device=view.device)
        cleaned = torch.where(finite, values, zero)
        # the shift: each entry's first finite value, in (A, B) order (0 if it has none)
        entries = values.shape[1]
        first = finite.transpose(0, 1).reshape(entries, -1).to(torch.uint8).argmax(dim=1, keepdim=True)
        shift = cleaned.transpose(0, 1).reshape(entries, -1).gather(1, first)[:, 0]
        centred = torch.where(finite, values - shift[None, :, None], zero)
        count = finite.sum(dim=(0, 2), dtype=dtype)
        total = centred.sum(dim=(0, 2))
        squares = (centred * centred).sum(dim=(0, 2))
        inf = torch.full((), math.inf, dtype=dtype, device=view.device)  # a fill, not a host copy
        minimum = torch.where(finite, values, inf).amin()
        maximum = torch.where(finite, values, -inf).amax()
        numel = values.numel()
        far = numel - (values.abs() <= plan.near_bound).sum().to(dtype)
        nonfinite = numel - count.sum()
        any_finite = count.sum() > 0
        nan = torch.full((), math.nan, dtype=dtype, device=view.device)
        scalars = torch.stack((torch.where(any_finite, minimum, nan), torch.where(any_finite, maximum, nan),
                               far, nonfinite))
        return torch.cat((count, shift, total, squares, scalars)).double()


def _triton_geometry(view: torch.Tensor) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(A, E, B) and strides for the Triton kernel. One contiguous entry is read as (numel, 1, 1), so
    that programs can split it along A."""
    a, e, b = view.shape
    if e == 1 and view.is_contiguous():
        return (view.numel(), 1, 1), (1, 1, 1)
    return (a, e, b), tuple(view.stride())


def _entries_shape(x: torch.Tensor, unit_dim: int | None) -> tuple[tuple[int, int, int], bool]:
    """How to view ``x`` as (A, E, B): moments per entry E (a unit, or the whole tensor when it has
    no units), over A and B. Also returns whether ``x`` must first be permuted from channels-last."""
    numel = x.numel()
    if unit_dim is not None and not -x.ndim <= unit_dim < x.ndim:
        unit_dim = None  # a later call of a site with fewer dims than its first
    if x.ndim == 0 or unit_dim is None:
        return (1, 1, numel), False
    if unit_dim == -1 or unit_dim == x.ndim - 1:
        return (numel // x.shape[-1], x.shape[-1], 1), False
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return (numel // x.shape[1], x.shape[1], 1), True
    rows, units = x.shape[0], x.shape[1]
    return (rows, units, numel // (rows * units)), False
