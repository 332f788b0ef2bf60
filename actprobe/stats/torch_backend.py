"""The portable backend: torch operations that mask non-finite values, on any device.

Unlike the C and Triton kernels, it shifts each entry by its own mean (one more pass, cheap in torch)
rather than by its first value.

They never read a device value on the host, so they never synchronise. On a CPU without the C
extension, a cheaper unmasked pass runs first and is kept when every value is finite (reading a CPU
value costs no synchronisation).
"""

from __future__ import annotations

import math

import torch

from .arena import Arena, Partial
from .plan import Plan

NAME = "torch"


class TorchBackend:
    """Moments with torch operations. ``cpu_shortcut``: try the unmasked pass first on the CPU
    (tests turn it off to run the masked kernel that other devices use)."""

    name = NAME

    def __init__(self, *, cpu_shortcut: bool = True) -> None:
        self.cpu_shortcut = cpu_shortcut

    def __call__(self, x: torch.Tensor, plan: Plan, arena: Arena) -> Partial:
        width = 4 * plan.entries + 4
        offset = arena.reserve(width)
        view = plan.view(x.detach())  # operations on x itself would grow the autograd graph
        packed = unmasked_cpu(view, plan) if self.cpu_shortcut and x.device.type == "cpu" else None
        if packed is None:
            packed = masked(view, plan)
        arena.buffer[offset:offset + width].copy_(packed, non_blocking=True)
        return Partial(offset, plan.entries, plan.units, x.numel())

    def release_memory(self) -> None:
        pass


def unmasked_cpu(view: torch.Tensor, plan: Plan) -> torch.Tensor | None:
    """Fewer passes, assuming finite values; None when they are not."""
    values = view.to(plan.dtype)
    minimum, maximum = torch.aminmax(values)
    if not math.isfinite(float(maximum - minimum)):  # a CPU value: reading it costs no synchronisation
        return None
    # the shift is each entry's mean (one more pass): a first value far from the mean (an outlier) would
    # cancel the squares away; the sums accumulate in float64
    shift = values.mean(dim=(0, 2))
    centred = values - shift[None, :, None]
    total = centred.sum(dim=(0, 2), dtype=torch.float64)
    squares = centred.square_().sum(dim=(0, 2), dtype=torch.float64)
    far = (values.abs() > plan.near_bound).sum().to(plan.dtype)
    count = torch.full_like(shift, values.numel() // values.shape[1])
    scalars = torch.stack((minimum, maximum, far, torch.zeros_like(far)))
    return torch.cat((count.double(), shift.double(), total, squares, scalars.double()))


def masked(view: torch.Tensor, plan: Plan) -> torch.Tensor:
    """The masked moments of (A, E, B) ``view``; never reads a device value on the host."""
    dtype = plan.dtype
    values = view.to(dtype)
    finite = torch.isfinite(values)
    zero = torch.zeros((), dtype=dtype, device=view.device)
    cleaned = torch.where(finite, values, zero)
    count = finite.sum(dim=(0, 2), dtype=dtype)
    # the shift: each entry's mean over its finite values (0 if it has none); a first value far from
    # the mean (an outlier) would cancel the squares away. The sums accumulate in float64.
    shift = cleaned.sum(dim=(0, 2)) / count.clamp_min(1)
    centred = torch.where(finite, values - shift[None, :, None], zero)
    total = centred.sum(dim=(0, 2), dtype=torch.float64)
    squares = (centred * centred).sum(dim=(0, 2), dtype=torch.float64)
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
    return torch.cat((count.double(), shift.double(), total, squares, scalars.double()))
