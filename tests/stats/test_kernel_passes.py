"""The C kernel's passes as the raw output shows them: an entry whose shift (its first value) lies more than 8
standard deviations from its mean is summed again around its mean, one just under that is not (the first look at
every entry must never skip one that the exact test takes), and what the output buffer held before a call never
shows in what the call wrote (the row-by-row path writes its output once, at the end)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actprobe.stats import c_backend
from actprobe.stats.single import tensor_statistics
from conftest import assert_statistics_close, reference_statistics

pytestmark = pytest.mark.skipif(not c_backend.available(), reason="the C extension is not built")

PAIRS = 50  # an entry: its first value, then PAIRS values of +1 and PAIRS of -1


def _moments(x: torch.Tensor, a: int, e: int, b: int, fill: float = 0.0) -> np.ndarray:
    out = torch.full((4 * e + 4,), fill, dtype=torch.float64)
    args = (x.dtype == torch.float64, x.data_ptr(), a, e, b, 0.05, out.data_ptr())
    if not c_backend._cstats.moments(*args):
        c_backend._cstats.masked(*args)
    return out.numpy().copy()


def _first_value_at(sigmas: float) -> float:
    """The first value t of an entry [t, +1 × PAIRS, -1 × PAIRS] that lies ``sigmas`` population standard
    deviations from the entry's mean (float64; the distance grows with t)."""
    n = 1 + 2 * PAIRS

    def distance(t: float) -> float:
        mean = t / n
        std = np.sqrt((t * t + 2 * PAIRS) / n - mean * mean)
        return (t - mean) / std

    low, high = 0.0, 1e6
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if distance(middle) < sigmas else (low, middle)
    return low


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigmas,summed_again", [(7.9, False), (8.1, True), (20.0, True), (3.0, False)])
def test_an_entry_is_summed_again_exactly_when_its_shift_is_beyond_8_sigmas(dtype, sigmas, summed_again):
    t = _first_value_at(sigmas)
    entry = torch.tensor([t] + [1.0] * PAIRS + [-1.0] * PAIRS, dtype=dtype)
    # (A, E, B) = (1, 3, 101): three entries, the middle one the entry above, the others plain noise
    noise = torch.randn(2, entry.numel(), generator=torch.Generator().manual_seed(3), dtype=dtype)
    x = torch.stack([noise[0], entry, noise[1]]).contiguous()
    out = _moments(x, 1, 3, entry.numel())
    shift = out[3 + 1]  # count[3] shift[3] sum[3] sumsq[3] ...
    if summed_again:
        assert shift != entry[0].item(), "the shift was not moved to the entry's mean"
        # moved by the mean of the values less the shift, as summed in float32 blocks for float32 input
        assert shift == pytest.approx(entry.double().mean().item(), abs=1e-5 * t)
    else:
        assert shift == entry[0].item()
    got = tensor_statistics(x.view(1, 3, -1), unit_dim=1, implementation="c")
    assert_statistics_close(got, reference_statistics(x.view(1, 3, -1), 1))


# (A, E, B): the row-by-row path (short runs; many rows of few columns), the run path, one entry in short runs
SHAPES = [(32, 64, 1), (256, 8, 196), (256, 16, 49), (7, 5, 300), (4096, 1, 1), (3, 5, 7)]


@pytest.mark.parametrize("a,e,b", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_what_the_output_held_before_never_shows(a, e, b, dtype):
    x = torch.randn(a, e, b, generator=torch.Generator().manual_seed(4), dtype=dtype) * 3 + 1
    x[0, 0, 0] = 500.0  # one entry summed again as well
    clean = _moments(x, a, e, b, fill=0.0)
    for fill in (float("nan"), float("inf"), -1e300, 12345.0):
        assert np.array_equal(_moments(x, a, e, b, fill=fill).view(np.uint64), clean.view(np.uint64)), fill
    got = tensor_statistics(x, unit_dim=1, implementation="c")
    assert_statistics_close(got, reference_statistics(x, 1))


# float64 entries whose first value (0) the exact test takes as far from the mean, where a first look computed at
# count^2 scale would not: quotients that round to subnormal numbers, and a sum of squares times the count beyond
# float64 (found by an adversarial sweep against the kernel before the first look)
EXTREMES = {
    "subnormal quotients": [0.0, 3.1434555694052576e-162],
    "a product beyond float64": [0.0] + [2.0504481980271076e152] * 65,
}


@pytest.mark.parametrize("name", sorted(EXTREMES))
def test_extreme_magnitudes_go_to_the_exact_test(name):
    x = torch.tensor(EXTREMES[name], dtype=torch.float64)
    out = _moments(x, 1, 1, x.numel())
    assert out[1] != 0.0, "the entry was not summed again around its mean"
    assert out[1] == pytest.approx(x.mean().item(), rel=1e-3)
