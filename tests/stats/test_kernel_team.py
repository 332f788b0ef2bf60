"""The C kernel's team: large tensors read in parts by the OpenMP threads torch runs on, the parts
combined into the same statistics (float64 reference), a part left undone read again, as many threads
as torch uses at each call, a team switched off while another thread's call is in flight, and a forked
child that never uses its copy of the team."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import pytest
import torch

from actprobe.stats import c_backend
from actprobe.stats.single import tensor_statistics
from conftest import assert_statistics_close, reference_statistics

pytestmark = pytest.mark.skipif(not c_backend.available(), reason="the C extension is not built")

# (A, E, B) views of the kernel's three ways of reading, each large enough for the team (2^17 values)
LARGE = [((256, 8, 14, 14), 1), ((64, 16, 16, 16), 1), ((2048, 96), -1), ((512, 16, 7, 7), 1),
         ((200000, 1), -1), ((16384, 1, 3, 3), 1)]  # one unit in short runs: each part read as one run

PARALLEL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint)
PART = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
INT = ctypes.CFUNCTYPE(ctypes.c_int)


class FakeTeam:
    """A GOMP_parallel that runs the parts one after another on the calling thread, recording them;
    ``skip`` names a part it leaves undone (a team smaller than asked for); ``threads``: what its
    omp_get_max_threads says."""

    def __init__(self, skip: int | None = None) -> None:
        self.skip, self.current, self.calls, self.threads = skip, 0, [], 2
        self.parallel = PARALLEL(self._parallel)
        self.thread_num = INT(lambda: self.current)
        self.max_threads = INT(lambda: self.threads)

    def _parallel(self, function, data, threads, flags):
        self.calls.append(threads)
        part = PART(function)
        for t in range(threads):
            if t != self.skip:
                self.current = t
                part(data)

    def install(self, threads: int = 2) -> None:
        self.threads = threads
        c_backend._cstats.set_team(*(ctypes.cast(f, ctypes.c_void_p).value
                                     for f in (self.parallel, self.thread_num, self.max_threads)))


@pytest.fixture
def restore_team():
    yield
    c_backend.share_torch_threads()


def _statistics(x, unit_dim):
    return tensor_statistics(x, unit_dim=unit_dim, implementation="c")


@pytest.mark.parametrize("shape,unit_dim", LARGE)
def test_two_parts_combine_into_the_float64_reference(shape, unit_dim, restore_team, monkeypatch):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(11)) * 2.5 + 0.7
    x.view(-1)[::97] = 0.0  # near-zero values in both parts
    team = FakeTeam()
    monkeypatch.setattr(c_backend, "share_torch_threads", lambda: team.install())
    got = _statistics(x, unit_dim)
    assert team.calls == [2], "a large tensor is read by a team of two"
    assert_statistics_close(got, reference_statistics(x, unit_dim))


def test_mean_far_from_zero_and_an_outlier_first_stay_accurate_in_parts(restore_team, monkeypatch):
    """Both parts shift by row 0's values: the second part's sums must not cancel either."""
    x = torch.randn(256, 8, 14, 14, generator=torch.Generator().manual_seed(12)) + 1e4
    x[0, 2, 0, 0] = 1e4 + 1000.0  # unit 2 starts with a 1000-sigma outlier (summed again around its mean)
    team = FakeTeam()
    monkeypatch.setattr(c_backend, "share_torch_threads", lambda: team.install())
    got = _statistics(x, 1)
    assert team.calls == [2]
    assert_statistics_close(got, reference_statistics(x, 1))


def test_a_part_left_undone_is_read_again_on_the_calling_thread(restore_team, monkeypatch):
    x = torch.randn(256, 8, 14, 14, generator=torch.Generator().manual_seed(13))
    team = FakeTeam(skip=1)
    monkeypatch.setattr(c_backend, "share_torch_threads", lambda: team.install())
    got = _statistics(x, 1)
    assert team.calls == [2]
    assert_statistics_close(got, reference_statistics(x, 1))


def test_small_tensors_and_one_thread_stay_on_the_calling_thread(restore_team, monkeypatch):
    team = FakeTeam()
    monkeypatch.setattr(c_backend, "share_torch_threads", lambda: team.install())
    _statistics(torch.randn(64, 32, 8, 8), 1)  # 2^17 values: the smallest a team reads …
    _statistics(torch.randn(64, 32, 8, 7), 1)  # … one row fewer is read alone
    assert team.calls == [2]
    monkeypatch.setattr(c_backend, "share_torch_threads", lambda: team.install(threads=1))
    _statistics(torch.randn(256, 8, 14, 14), 1)
    assert team.calls == [2]


@pytest.mark.parametrize("nan_part", [0, 1])
def test_a_nan_in_either_part_sends_the_call_to_the_masked_path(nan_part, restore_team, monkeypatch):
    x = torch.randn(256, 8, 14, 14, generator=torch.Generator().manual_seed(14))
    x[200 if nan_part else 3, 5, 7, 7] = float("nan")
    team = FakeTeam()
    monkeypatch.setattr(c_backend, "share_torch_threads", lambda: team.install())
    got = _statistics(x, 1)
    assert got["nonfinite"] == 1 / x.numel()  # a fraction of the values
    assert_statistics_close(got, reference_statistics(x, 1))


def test_torchs_own_team_reads_large_tensors(restore_team):
    """The real runtime (torch's libgomp here), with as many threads as torch uses."""
    if not all(c_backend.openmp_entry_points()) or torch.get_num_threads() < 2:
        pytest.skip("no OpenMP runtime loaded, or torch uses one thread here")
    x = torch.randn(512, 16, 14, 14, generator=torch.Generator().manual_seed(15))
    assert_statistics_close(_statistics(x, 1), reference_statistics(x, 1))


def test_each_call_takes_as_many_threads_as_torch_uses_then(restore_team, monkeypatch):
    """torch.set_num_threads after the probe's kernel was made: the next call follows it."""
    team = FakeTeam()
    monkeypatch.setattr(c_backend, "share_torch_threads", lambda: team.install())
    x = torch.randn(256, 8, 14, 14)
    from actprobe.stats.arena import Arena
    from actprobe.stats.dispatch import MomentKernel

    kernel = MomentKernel(0.05, use_c=True, use_triton=False)  # made while the team says 2 threads
    kernel(x, 1, Arena(torch.device("cpu")))
    team.threads = 1  # what torch.set_num_threads(1) does to omp_get_max_threads
    kernel(x, 1, Arena(torch.device("cpu")))
    team.threads = 3
    kernel(x, 1, Arena(torch.device("cpu")))
    assert team.calls == [2, 3]


def test_switching_the_team_off_while_another_threads_call_runs_is_safe(restore_team):
    """A call copies the team's entry points when it starts: another thread's set_team (a new probe, a
    kernel made with ACTPROBE_KERNEL_THREADS=1) never pulls them from under it (it crashed before)."""
    entry_points = c_backend.openmp_entry_points()
    if not all(entry_points) or torch.get_num_threads() < 2:
        pytest.skip("no OpenMP runtime loaded, or torch uses one thread here")
    x = torch.randn(256, 8, 14, 14)
    want = reference_statistics(x, 1)
    stop = threading.Event()

    def toggle() -> None:
        while not stop.is_set():
            c_backend._cstats.set_team(*entry_points)
            c_backend._cstats.set_team(0, 0, 0)
            time.sleep(0)  # lets the other thread have the GIL: it toggles while that thread's call runs

    toggler = threading.Thread(target=toggle)
    toggler.start()
    try:
        for _ in range(100):
            c_backend._cstats.set_team(*entry_points)
            assert_statistics_close(_statistics(x, 1), want)
    finally:
        stop.set()
        toggler.join()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_never_uses_the_team(restore_team):
    """libgomp's team does not survive fork(): a child that asked its copy for threads would hang (torch's
    own operations hang there too, unless the child sets one thread). The kernel refuses the team in a
    child, whatever it is told later."""
    entry_points = c_backend.openmp_entry_points()
    if not all(entry_points) or torch.get_num_threads() < 2:
        pytest.skip("no OpenMP runtime loaded, or torch uses one thread here")
    x = torch.randn(512, 16, 14, 14)
    tensor_statistics(x, unit_dim=1, implementation="c")  # the parent's team has run
    pid = os.fork()
    if pid == 0:  # the child: ask for the team again, then read a large tensor
        try:
            c_backend._cstats.set_team(*entry_points)
            out = torch.empty(4 * 16 + 4, dtype=torch.float64)
            c_backend._cstats.moments(False, x.data_ptr(), 512, 16, 196, 0.05, out.data_ptr())
            os._exit(0 if abs(out[:16].sum().item() - 512 * 196 * 16) < 1e-6 else 3)
        finally:
            os._exit(4)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung in the kernel")
