"""The CUDA backend: the one-pass Triton kernel (``triton_kernel.py``), imported on first need.

It reads the activation where it lies, through its strides, and adds its sums into zeroed arena
memory with atomics; so an arena it writes into is zeroed again at each ``clear``.
"""

from __future__ import annotations

from types import ModuleType

import torch

from .arena import Arena, Partial
from .plan import Plan

NAME = "Triton"
_module: ModuleType | None = None
_failed = False


def kernel_module() -> ModuleType | None:
    """``actprobe.stats.triton_kernel``, imported on first need; None when Triton is not installed."""
    global _module, _failed
    if _module is None and not _failed:
        try:
            from . import triton_kernel
        except ImportError:
            _failed = True
        else:
            _module = triton_kernel
    return _module


class TritonBackend:
    """Moments with the Triton kernel, for tensors whose (A, E, B) view is their own memory."""

    name = NAME

    def prepare(self, x: torch.Tensor, plan: Plan) -> bool:
        """Attach a Triton launch plan to ``plan``; False when this backend cannot serve ``x``."""
        module = kernel_module()
        if module is None:
            return False
        view = plan.view(x)
        if view.data_ptr() != x.data_ptr():  # not a view of x's memory: it would need a copy
            return False
        view_shape, strides = geometry(view)
        plan.triton = module.TritonPlan(view_shape, strides, x.device, x.dtype)
        return True

    def __call__(self, x: torch.Tensor, plan: Plan, arena: Arena) -> Partial:
        launch = plan.triton
        entries = plan.entries
        offset = arena.reserve(4 * entries + 4 * launch.programs)
        arena.zero_on_clear = True
        buffer = arena.buffer
        middle = offset + 4 * entries
        launch.launch(x.detach(), buffer[offset:middle], buffer[middle:middle + 4 * launch.programs], plan.near_bound)
        return Partial(offset, entries, plan.units, x.numel(), launch.programs)

    def release_memory(self) -> None:
        pass


def geometry(view: torch.Tensor) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(A, E, B) and strides for the Triton kernel. One contiguous entry is read as (numel, 1, 1), so
    that programs can split it along A."""
    a, e, b = view.shape
    if e == 1 and view.is_contiguous():
        return (view.numel(), 1, 1), (1, 1, 1)
    return (a, e, b), tuple(view.stride())
