"""How a kernel sees one activation: as (A, E, B), moments per entry E over A and B.

A ``Plan`` is made once per (shape, dtype, device, unit_dim, contiguity) and cached by the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .arena import compute_dtype, near_zero_bound


@dataclass
class Plan:
    """How to compute one (shape, dtype, device, unit_dim); ``backend`` is the one that serves it."""

    view_shape: tuple[int, int, int]  # (A, E, B): moments per entry, over A and B
    channels_last: bool
    contiguous: bool  # the memory is already (A, E, B) row-major (contiguous or channels-last)
    units: int
    dtype: torch.dtype  # the dtype the values are summed in
    near_bound: float  # the largest value of dtype that is ≤ near_zero_eps
    is_double: bool = False  # dtype is float64
    backend: object = None  # the backend chosen by the dispatcher
    triton: object | None = None  # a triton_kernel.TritonPlan when the Triton backend serves this tensor

    @property
    def entries(self) -> int:
        return self.view_shape[1]

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as (A, E, B): a view whenever the memory allows."""
        return (x.permute(0, 2, 3, 1) if self.channels_last else x).reshape(self.view_shape)


def make_plan(x: torch.Tensor, unit_dim: int | None, near_zero_eps: float) -> Plan:
    shape, channels_last = entries_shape(x, unit_dim)
    units = 0 if unit_dim is None or x.ndim <= 1 else shape[1]
    dtype = compute_dtype(x.dtype)
    contiguous = x.is_contiguous() or (channels_last and x.is_contiguous(memory_format=torch.channels_last))
    return Plan(view_shape=shape, channels_last=channels_last, contiguous=contiguous, units=units, dtype=dtype,
                near_bound=near_zero_bound(near_zero_eps, dtype), is_double=dtype == torch.float64)


def entries_shape(x: torch.Tensor, unit_dim: int | None) -> tuple[tuple[int, int, int], bool]:
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
