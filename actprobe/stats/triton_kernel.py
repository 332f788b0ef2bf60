"""The one-pass statistics kernel for CUDA tensors, in Triton.

One launch per activation reads every value once, in its own dtype, and produces what a
``Partial`` holds: per entry (unit) the count of finite values, a shift (the entry's first value)
and the sums of (x − shift) and (x − shift)², and per program min, max, the count of values with
|x| > eps (non-finite included) and the count of non-finite values.

The activation is seen as (A, E, B) through three strides, so NCHW, channels-last, (N, F) and
(N, T, F) outputs are read where they lie, without a copy. A program covers a block of entries and
a range of A; its sums are accumulated per lane in float64 and added into the entry's totals with
float64 atomics. Every program of an entry shifts by the same value, so the sums add exactly as
the shifted-data algorithm needs; only their order varies (the last bits of a sum may differ from
run to run). The scalars of each program are stored separately and merged with the rest of the
step in ``merge.py``.

Triton's interpreter (``TRITON_INTERPRET=1``) runs the same kernel on CPU tensors: the tests
compare it with the float64 NumPy reference there.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

TILE = 1024  # values per program and iteration


@triton.jit
def _moments_kernel(x_ptr, moments_ptr, scalars_ptr, A, E, B, stride_a, stride_e, stride_b, rows_per_program,
                    near_bound, BLOCK_A: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_B: tl.constexpr,
                    ACC: tl.constexpr):
    # One function on purpose (52 lines): a Triton kernel is compiled as one unit, and splitting it into
    # @triton.jit helpers would only move its loads and sums apart from the stores that use them.
    pid_e = tl.program_id(0)
    pid_a = tl.program_id(1)
    e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    e_ok = e < E
    # the shift: each entry's first value, x[0, e, 0] (0 when it is not finite)
    shift = tl.load(x_ptr + e * stride_e, mask=e_ok, other=0.0).to(ACC)
    shift = tl.where((shift == shift) & (tl.abs(shift) != float("inf")), shift, 0.0)
    shift3 = shift[None, :, None]
    shape = (BLOCK_A, BLOCK_E, BLOCK_B)
    count = tl.zeros(shape, dtype=tl.float32)
    first = tl.zeros(shape, dtype=tl.float64)
    second = tl.zeros(shape, dtype=tl.float64)
    low = tl.full(shape, float("inf"), dtype=ACC)
    high = tl.full(shape, float("-inf"), dtype=ACC)
    near = tl.zeros(shape, dtype=tl.int32)
    bad = tl.zeros(shape, dtype=tl.int32)
    a_start = pid_a * rows_per_program
    a_end = tl.minimum(a_start + rows_per_program, A)
    e_offset = e[None, :, None] * stride_e
    e_mask = e_ok[None, :, None]
    for a0 in range(a_start, a_end, BLOCK_A):
        a = a0 + tl.arange(0, BLOCK_A)
        a_offset = a[:, None, None] * stride_a
        a_mask = (a < a_end)[:, None, None] & e_mask
        for b0 in range(0, B, BLOCK_B):
            b = b0 + tl.arange(0, BLOCK_B)
            mask = a_mask & (b < B)[None, None, :]
            x = tl.load(x_ptr + a_offset + e_offset + b[None, None, :] * stride_b, mask=mask, other=0.0).to(ACC)
            finite = mask & (x == x) & (tl.abs(x) != float("inf"))
            d = tl.where(finite, x - shift3, 0.0).to(tl.float64)
            count += finite.to(tl.float32)
            first += d
            second += d * d
            low = tl.minimum(low, tl.where(finite, x, float("inf")))
            high = tl.maximum(high, tl.where(finite, x, float("-inf")))
            near += (mask & (tl.abs(x) <= near_bound)).to(tl.int32)
            bad += (mask & ~finite).to(tl.int32)
    tl.atomic_add(moments_ptr + e, tl.sum(tl.sum(count, 2), 0).to(tl.float64), mask=e_ok)
    tl.store(moments_ptr + E + e, shift.to(tl.float64), mask=e_ok)
    tl.atomic_add(moments_ptr + 2 * E + e, tl.sum(tl.sum(first, 2), 0), mask=e_ok)
    tl.atomic_add(moments_ptr + 3 * E + e, tl.sum(tl.sum(second, 2), 0), mask=e_ok)
    program = pid_e * tl.num_programs(1) + pid_a
    seen = tl.sum(tl.sum(tl.sum(count, 2), 1), 0) + tl.sum(tl.sum(tl.sum(bad, 2), 1), 0).to(tl.float32)
    nonfinite = tl.sum(tl.sum(tl.sum(bad, 2), 1), 0).to(tl.float64)
    close = tl.sum(tl.sum(tl.sum(near, 2), 1), 0).to(tl.float32)
    tl.store(scalars_ptr + program * 4 + 0, tl.min(tl.min(tl.min(low, 2), 1), 0).to(tl.float64))
    tl.store(scalars_ptr + program * 4 + 1, tl.max(tl.max(tl.max(high, 2), 1), 0).to(tl.float64))
    tl.store(scalars_ptr + program * 4 + 2, (seen - close).to(tl.float64))
    tl.store(scalars_ptr + program * 4 + 3, nonfinite)


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class TritonPlan:
    """Block sizes and grid for one (shape, strides, dtype, device)."""

    def __init__(self, view_shape: tuple[int, int, int], strides: tuple[int, int, int], device: torch.device,
                 dtype: torch.dtype) -> None:
        a, e, b = view_shape
        self.view_shape, self.strides = view_shape, strides
        self.block_b = min(_next_power_of_2(b), 512) if b > 1 else 1
        self.block_e = min(_next_power_of_2(e), 64) if b == 1 else 1
        self.block_a = max(1, TILE // (self.block_b * self.block_e))
        e_programs = -(-e // self.block_e)
        a_tiles = -(-a // self.block_a)
        a_programs = max(1, min(a_tiles, _target_programs(device) // e_programs))
        self.rows_per_program = -(-a_tiles // a_programs) * self.block_a
        self.grid = (e_programs, -(-a // self.rows_per_program))
        self.acc = tl.float64 if dtype == torch.float64 else tl.float32

    @property
    def programs(self) -> int:
        return self.grid[0] * self.grid[1]

    def launch(self, x: torch.Tensor, moments: torch.Tensor, scalars: torch.Tensor, near_bound: float) -> None:
        """Add the moments of ``x`` into ``moments`` (4E values, zeroed before), store the scalars."""
        a, e, b = self.view_shape
        sa, se, sb = self.strides
        _moments_kernel[self.grid](x, moments, scalars, a, e, b, sa, se, sb, self.rows_per_program, near_bound,
                                   BLOCK_A=self.block_a, BLOCK_E=self.block_e, BLOCK_B=self.block_b, ACC=self.acc)


_programs_cache: dict[torch.device, int] = {}


def _target_programs(device: torch.device) -> int:
    """About four programs per streaming multiprocessor; few in the interpreter, where each is slow."""
    if device.type != "cuda":
        return 4
    if device not in _programs_cache:
        _programs_cache[device] = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return _programs_cache[device]


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
