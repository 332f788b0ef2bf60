"""The statistics of one tensor, read on the host: for tests, the GPU check and interactive use."""

from __future__ import annotations

import torch

from ..runfile.format import DEAD_EPS, NEAR_ZERO_EPS, STATISTICS
from .arena import Arena
from .dispatch import MomentKernel
from .merge import Layout, merge_now

IMPLEMENTATIONS = ("auto", "c", "torch", "torch-masked", "triton")


def tensor_statistics(x: torch.Tensor, *, unit_dim: int | None, near_zero_eps: float = NEAR_ZERO_EPS,
                      dead_eps: float = DEAD_EPS, implementation: str = "auto") -> dict[str, float]:
    """The statistics actprobe records, for one tensor: ``{name: value}`` for each of ``STATISTICS``.

    ``unit_dim`` is the dimension holding the units for ``dead``: 1 (channels, as in (N, C, …)), -1 (the
    last, as in (…, features)) or None (no units, ``dead`` is NaN); a probe's sites use these three.
    ``implementation`` picks the kernel: ``auto`` (what a probe uses), ``c`` (the C kernel, CPU),
    ``torch`` (torch operations, with the CPU's unmasked first try) or ``torch-masked`` (the torch
    kernel that runs on GPUs without Triton) or ``triton`` (the Triton kernel; on CPU tensors it needs
    ``TRITON_INTERPRET=1``). Reads the result on the host: for tests and interactive use.
    """
    if unit_dim is not None and x.ndim and unit_dim not in (1, -1, x.ndim - 1):
        raise ValueError(f"unit_dim must be 1, -1 or None (the units of a probe's sites), got {unit_dim}")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}; available: {', '.join(IMPLEMENTATIONS)}")
    options = {"c": {"use_c": True, "use_triton": False}, "torch": {"use_c": False, "use_triton": False},
               "torch-masked": {"use_c": False, "cpu_shortcut": False, "use_triton": False},
               "triton": {"use_c": False, "use_triton": True}}.get(implementation, {})
    arena = Arena(x.device)
    partial = MomentKernel(near_zero_eps, **options)(x.detach(), unit_dim, arena)
    layout = Layout.build([(0, partial)], 1, x.device)
    row = merge_now(layout, arena.row(), dead_eps)[0][0, 0].cpu().tolist()
    return dict(zip(STATISTICS, row))
