"""The portable backend: torch operations that mask non-finite values, on any device.

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
        view = plan.view(x)
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
    shift = values[0, :, 0]
    # centred and summed in float64: a shift far from the mean (an outlier first) must not cancel the
    # squares away
    centred = values.double() - shift.double()[None, :, None]
    total = centred.sum(dim=(0, 2))
    squares = centred.square_().sum(dim=(0, 2))
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
    # the shift: each entry's first finite value, in (A, B) order (0 if it has none)
    entries = values.shape[1]
    first = finite.transpose(0, 1).reshape(entries, -1).to(torch.uint8).argmax(dim=1, keepdim=True)
    shift = cleaned.transpose(0, 1).reshape(entries, -1).gather(1, first)[:, 0]
    # centred and summed in float64: a shift far from the mean (an outlier first) must not cancel the
    # squares away
    centred = torch.where(finite, values.double() - shift.double()[None, :, None], 0.0)
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
    return torch.cat((count.double(), shift.double(), total, squares, scalars.double()))
