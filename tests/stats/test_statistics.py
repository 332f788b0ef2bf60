"""Statistics against an independent float64 NumPy reference, for every kernel: C, torch, torch-masked (GPUs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actprobe.runfile.format import STATISTICS
from actprobe.stats import c_backend
from actprobe.stats.single import tensor_statistics
from conftest import assert_statistics_close, reference_statistics

KERNELS = ["torch", "torch-masked"] + (["c"] if c_backend.available() else [])

SHAPES = [
    # the C kernel's three ways of reading (A rows, E units, B values per unit and row):
    ((256, 8, 14, 14), 1),  # long runs, many rows, 1568 columns: read row by row
    ((64, 8, 16, 16), 1),  # long runs, fewer than 128 rows: summed run by run
    ((128, 16, 12, 12), 1),  # long runs, more than 2048 columns: summed run by run
    ((64, 16, 7, 7), 1),  # short runs: read by columns
    ((3, 5, 4, 4), 1),  # few rows
    ((128, 64), -1),  # linear output
    ((4, 9, 32), -1),  # (N, T, F)
    ((16, 12, 30), 1),  # (N, C, L)
    ((5000,), None),  # no units
    ((3000, 1), -1),  # one unit in runs of one value: read as one run (a Linear layer of one output)
    ((40, 1, 9, 9), 1),  # one channel, runs of 81 values
    ((200, 1, 3, 3), 1),  # one channel, runs of 9 values: read as one run
    ((), None),  # a scalar
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape,unit_dim", SHAPES)
def test_random_tensors_match_float64_reference(shape, unit_dim, dtype, kernel):
    gen = torch.Generator().manual_seed(hash((shape, str(dtype))) % 2**31)
    x = (torch.randn(shape, generator=gen) * 1.7 + 0.3).to(dtype)
    got = tensor_statistics(x, unit_dim=unit_dim, implementation=kernel)
    assert_statistics_close(got, reference_statistics(x, unit_dim))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape,unit_dim", [((256, 16, 8, 8), 1), ((512, 32), -1), ((20000,), None)])
def test_mean_ten_thousand_times_std(shape, unit_dim, kernel):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen) + 1e4  # mean / std = 10,000
    want = reference_statistics(x, unit_dim)
    assert_statistics_close(tensor_statistics(x, unit_dim=unit_dim, implementation=kernel), want)
    # the naive float32 sum / sum-of-squares formula fails here: the test can tell the difference
    naive_var = (x * x).mean() - x.mean() ** 2
    assert abs(naive_var.clamp_min(0).sqrt().item() - want["std"]) / want["std"] > 1e-3


@pytest.mark.parametrize("kernel", KERNELS)
def test_non_finite_values_are_excluded_and_counted(kernel):
    x = torch.randn(32, 4, 6, 6)
    x[0, 0, 0, 0] = float("nan")
    x[1, 2, 3, 4] = float("inf")
    x[5, 1, :, :] = float("-inf")
    got = tensor_statistics(x, unit_dim=1, implementation=kernel)
    want = reference_statistics(x, unit_dim=1)
    assert_statistics_close(got, want)
    assert got["nonfinite"] == pytest.approx(38 / x.numel())


@pytest.mark.parametrize("kernel", KERNELS)
def test_all_values_non_finite(kernel):
    x = torch.full((8, 3), float("nan"))
    got = tensor_statistics(x, unit_dim=-1, implementation=kernel)
    assert got["count"] == 0 and got["nonfinite"] == 1.0 and got["near_zero"] == 0.0
    for name in ("mean", "std", "min", "max"):
        assert np.isnan(got[name])


@pytest.mark.parametrize("kernel", KERNELS)
def test_dead_units(kernel):
    x = torch.randn(64, 10, 3, 3)
    x[:, 2] = 0.0  # a ReLU unit that never fires
    x[:, 7] = 1e4  # a unit stuck at a large constant: std exactly 0
    x[:, 4] = 0.25 + 1e-9 * torch.randn(64, 3, 3)  # constant in float32 after rounding
    got = tensor_statistics(x, unit_dim=1, implementation=kernel)
    assert got["dead"] == pytest.approx(0.3)
    assert_statistics_close(got, reference_statistics(x, unit_dim=1))


@pytest.mark.parametrize("kernel", KERNELS)
def test_near_zero_boundary_is_inclusive_and_exact(kernel):
    eps = 0.05
    e32 = np.float32(eps)
    below = np.nextafter(e32, np.float32(0)) if float(e32) > eps else e32  # largest float32 <= eps
    above = np.nextafter(below, np.float32(1))
    x = torch.tensor([float(below), -float(below), float(above), -float(above), 0.0, -0.0, 1.0, 1e-30],
                     dtype=torch.float32)
    got = tensor_statistics(x.repeat(1000), unit_dim=None, implementation=kernel)
    assert got["near_zero"] == pytest.approx(5 / 8, abs=0)


def test_kernels_agree():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(128, 24, 5, 5, generator=gen).relu() * 3
    results = [tensor_statistics(x, unit_dim=1, implementation=k) for k in KERNELS]
    for other in results[1:]:
        assert_statistics_close(other, results[0], rtol=1e-6)


def test_channels_last_units_are_channels():
    x = torch.randn(8, 6, 5, 5)
    x[:, 3] = 0.0
    cl = x.to(memory_format=torch.channels_last)
    assert not cl.is_contiguous()
    assert_statistics_close(tensor_statistics(cl, unit_dim=1), reference_statistics(x, unit_dim=1))


def test_non_contiguous_input():
    x = torch.randn(40, 30).t()  # (30, 40) transposed view
    assert_statistics_close(tensor_statistics(x, unit_dim=-1), reference_statistics(x, unit_dim=-1))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape, unit_dim", [((256, 64), -1), ((64, 8, 16, 16), 1), ((256, 8, 16, 16), 1),
                                             ((100000,), None), ((8, 16, 32), -1)])
def test_an_outlier_as_the_first_value_keeps_the_documented_accuracy(kernel, dtype, shape, unit_dim):
    """The shift is each unit's first value: a 1000-sigma outlier there must not cancel the squares."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    x[(0,) * len(shape)] = 1000.0
    if len(shape) > 1:
        x[(0, 3) + (0,) * (len(shape) - 2)] = -1000.0  # a second unit that starts with an outlier
    x = x.to(dtype)
    got = tensor_statistics(x, unit_dim=unit_dim, implementation=kernel)
    assert_statistics_close(got, reference_statistics(x, unit_dim))


@pytest.mark.skipif(not c_backend.available(), reason="the C extension is not built")
def test_finite_values_whose_squares_overflow_float32():
    """|x| near 1e20 is finite in float32 but its square is not: the C kernel sums such a tensor in float64.
    (The torch and Triton kernels square in the input's precision: their std is Inf there, as documented.)"""
    kernel = "c"
    x = torch.randn(64, 8, 5, 5, generator=torch.Generator().manual_seed(9))
    x[3, 2, 1, 1] = 3e20
    x[7, 5] = -1e20
    got = tensor_statistics(x, unit_dim=1, implementation=kernel)
    assert got["nonfinite"] == 0.0 and np.isfinite(got["std"])
    assert_statistics_close(got, reference_statistics(x, unit_dim=1))


@pytest.mark.parametrize("kernel", KERNELS)
def test_one_kernel_reads_each_memory_layout_of_a_shape_by_its_own_plan(kernel):
    """A channels-last tensor, then a stride-0 one (the gradient of a sum) of the same shape: each is read
    as its strides say (a plan cached by shape alone read the second as channels-last, out of bounds)."""
    from actprobe.stats.arena import Arena
    from actprobe.stats.dispatch import MomentKernel
    from actprobe.stats.merge import Layout, merge_now

    options = {"c": {}, "torch": {"use_c": False}, "torch-masked": {"use_c": False, "cpu_shortcut": False}}[kernel]
    moments = MomentKernel(0.05, use_triton=False, **options)
    channels_last = torch.randn(4, 8, 16, 16).to(memory_format=torch.channels_last)
    broadcast = torch.full((4, 8, 1, 1), 0.25).expand(4, 8, 16, 16)  # what d(x.sum((2, 3)))/dx looks like
    for x in (channels_last, broadcast, channels_last):
        arena = Arena(torch.device("cpu"))
        partial = moments(x, 1, arena)
        row = merge_now(Layout.build([(0, partial)], 1, torch.device("cpu")), arena.row(), 1e-6)[0][0, 0].tolist()
        assert_statistics_close(dict(zip(STATISTICS, row)), reference_statistics(x, 1))


@pytest.mark.parametrize("unit_dim", [0, 2, -2])
def test_units_on_another_dimension_are_refused(unit_dim):
    """Every backend reads units on dim 1 or on the last dim: any other was read as dim 1 before."""
    with pytest.raises(ValueError, match="unit_dim"):
        tensor_statistics(torch.randn(2, 3, 4, 5), unit_dim=unit_dim)
