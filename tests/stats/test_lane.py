"""The C lane (``c_backend.run_lane``, ``_cstats.lane``): the same bytes and ``Partial`` as the C backend's
general call, and nothing changed whenever it declines."""

from __future__ import annotations

import pytest
import torch

from actprobe.stats import c_backend
from actprobe.stats.arena import Arena, Partial
from actprobe.stats.dispatch import MomentKernel

pytestmark = pytest.mark.skipif(not c_backend.available(), reason="the C extension is not built")

NEAR = 0.05


def lane_for(kernel: MomentKernel, x: torch.Tensor, unit_dim: int | None, site: int = 7) -> tuple:
    kernel(x, unit_dim, Arena(torch.device("cpu")))  # makes the plan
    spec = kernel.lane(x, unit_dim)
    assert spec is not None
    return (site, x.shape, x.stride(), x.dtype, *spec, [None])


def values(dtype: torch.dtype, special: str) -> torch.Tensor:
    x = torch.randn(64, 12, 5, generator=torch.Generator().manual_seed(1)).to(dtype) * 3 + 1
    x[:, 3] = 0.5  # a dead unit
    if special == "nan":
        x[10, 2, 1] = float("nan")
    elif special == "inf":
        x[0, 0, 0] = float("-inf")
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", ["finite", "nan", "inf"])
@pytest.mark.parametrize("unit_dim", [1, None])
def test_a_lane_writes_what_the_general_call_writes(dtype, special, unit_dim):
    x = values(dtype, special)
    kernel = MomentKernel(NEAR)
    lane = lane_for(kernel, x, unit_dim)
    general, fast = Arena(torch.device("cpu")), Arena(torch.device("cpu"))
    general.reserve(40)  # partials after others: offsets count
    fast.reserve(40)
    want = kernel(x, unit_dim, general)
    partials: list = []
    assert c_backend.run_lane(lane, x, fast, partials) is True
    assert partials == [(7, want)] and type(partials[0][1]) is Partial
    assert fast.used == general.used
    assert torch.equal(fast.row().view(torch.int64), general.row().view(torch.int64))  # bit for bit, NaN included


def test_a_lane_declines_what_it_was_not_made_for_and_changes_nothing():
    x = values(torch.float32, "finite")
    kernel = MomentKernel(NEAR)
    lane = lane_for(kernel, x, 1)
    arena = Arena(torch.device("cpu"))
    before = arena.buffer.clone()
    partials: list = []
    declined = [
        torch.nn.Parameter(x.clone()),  # a subclass: the general path decides
        x.double(),  # another dtype
        x[:, :, :4].contiguous(),  # another shape
        x.permute(2, 1, 0).contiguous().permute(2, 1, 0),  # the same shape, other strides
        torch.empty(x.shape, device="meta"),  # not on the CPU
        "not a tensor",
    ]
    for other in declined:
        assert c_backend.run_lane(lane, other, arena, partials) is False
    arena.used = arena.size - 4 * 12  # no room for 4E + 4 values
    assert c_backend.run_lane(lane, x, arena, partials) is False
    assert partials == [] and arena.used == arena.size - 48 and torch.equal(arena.buffer, before)


def test_a_full_arena_is_grown_by_the_general_path_and_the_lane_goes_on():
    x = values(torch.float32, "finite")
    kernel = MomentKernel(NEAR)
    lane = lane_for(kernel, x, 1)
    arena, partials = Arena(torch.device("cpu")), []
    width = 4 * 12 + 4
    while c_backend.run_lane(lane, x, arena, partials):
        pass
    assert len(partials) == arena.size // width and arena.used == len(partials) * width
    kernel(x, 1, arena)  # the general path: grows the arena (moving it)
    assert c_backend.run_lane(lane, x, arena, partials) is True
    first = arena.buffer[:width]
    assert all(torch.equal(arena.buffer[p.offset:p.offset + width], first) for _, p in partials)


def test_bad_lanes_raise_clear_errors():
    x = values(torch.float32, "finite")
    arena = Arena(torch.device("cpu"))
    lane = lane_for(MomentKernel(NEAR), x, 1)
    with pytest.raises(TypeError, match="12-tuple"):
        c_backend.run_lane(lane[:5], x, arena, [])
    with pytest.raises(TypeError, match="12-tuple"):
        c_backend.run_lane(lane, x, arena, ())
    with pytest.raises(TypeError, match="12-tuple"):
        c_backend.run_lane(lane[:11] + ([None, None],), x, arena, [])
    with pytest.raises(ValueError, match="inconsistent"):
        c_backend.run_lane(lane[:10] + (lane[10] + 1, [None]), x, arena, [])
    with pytest.raises(TypeError, match="tuple type"):
        c_backend._cstats.set_lane_types(torch.Tensor, dict)


def test_an_arena_whose_bookkeeping_is_out_of_range_is_declined():
    """Values the recorder never sets, but that must not send the kernel to a wild address."""
    x = values(torch.float32, "finite")
    lane = lane_for(MomentKernel(NEAR), x, 1)
    arena = Arena(torch.device("cpu"))
    for used, size in ((2**63 - 10, 100), (-1, 100), (0, -5), (200, 100)):
        arena.used, arena.size = used, size
        assert c_backend.run_lane(lane, x, arena, []) is False


def test_a_call_at_the_offset_of_the_last_appends_the_same_pair():
    """A step like the last allocates nothing: the lane appends the pair it made last time, the same object, when
    it writes at the same offset (so that the step's arrangement compares equal by identity); a call at another
    offset makes a new pair, equal to the general call's ``Partial``."""
    x = values(torch.float32, "finite")
    kernel = MomentKernel(NEAR)
    lane = lane_for(kernel, x, 1)
    arena, partials = Arena(torch.device("cpu")), []
    assert c_backend.run_lane(lane, x, arena, partials)
    arena.used = 0
    assert c_backend.run_lane(lane, x, arena, partials)
    assert partials[0] is partials[1] and lane[-1] == [partials[0]]
    arena.used = 8
    assert c_backend.run_lane(lane, x, arena, partials)
    general = Arena(torch.device("cpu"))
    general.reserve(8)
    assert partials[2] is not partials[0] and partials[2] == (7, kernel(x, 1, general)) and lane[-1] == [partials[2]]
    arena.used = 0
    assert c_backend.run_lane(lane, x, arena, partials) and partials[3] is not partials[0]
    assert partials[3] == partials[0]
