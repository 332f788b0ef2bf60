"""Merging packed partials into rows: the C merge (``_cmerge``, what the writer thread runs for CPU
rows) against the torch merge (what runs on devices) and against the float64 reference; the ring's
hand-over of buffers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import actprobe
from actprobe.stats import merge
from actprobe.stats.arena import Arena
from actprobe.stats.dispatch import MomentKernel
from conftest import assert_statistics_close, reference_statistics

needs_c = pytest.mark.skipif(merge._cmerge is None, reason="the C merge was not built")


def _step(calls: list[tuple[int, torch.Tensor, int | None]], sites: int, *, use_c: bool = True):
    """One step's packed partials, as the recorder makes them: (site, tensor, unit_dim) per call."""
    arena = Arena(torch.device("cpu"))
    kernel = MomentKernel(0.05, use_c=use_c, use_triton=False)
    partials = [(site, kernel(x, unit_dim, arena)) for site, x, unit_dim in calls]
    return merge.Layout.build(partials, sites, torch.device("cpu")), arena.row().clone()


def _calls(gen: torch.Generator) -> list[tuple[int, torch.Tensor, int | None]]:
    x = torch.randn(16, 8, 5, 5, generator=gen) * 3 + 1
    nan_inf = torch.randn(32, 12, generator=gen)
    nan_inf[0, 0], nan_inf[5, 3], nan_inf[:, 7] = float("nan"), float("inf"), float("nan")
    dead = torch.randn(20, 6, generator=gen)
    dead[:, 2] = 0.25  # a constant unit: dead
    return [
        (0, x, 1),
        (1, nan_inf, -1),
        (2, torch.full((4, 3), float("nan")), -1),  # no finite value at all
        (3, torch.randn(100, generator=gen) + 1e4, None),  # pseudo-unit, mean far from zero
        (4, dead, -1),
        (4, dead * 2 + 1, -1),  # a second call of site 4 (gradient accumulation): merged unit by unit
        (6, torch.randn(7, 6, generator=gen).double(), -1),  # site 5 has no call this step
    ]


@needs_c
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_c_merge_computes_what_the_torch_merge_computes(seed):
    gen = torch.Generator().manual_seed(seed)
    layout, row = _step(_calls(gen), 7)
    rows = torch.stack([row, row * 1.0, row])  # several rows at once, as a ring hands them over
    want = merge.merge_rows(layout, rows, 1e-6).numpy()
    got = np.empty_like(want)
    merge.merge_into(layout, rows, 1e-6, got)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@needs_c
def test_the_c_merge_matches_the_float64_reference_per_site():
    gen = torch.Generator().manual_seed(5)
    calls = _calls(gen)
    layout, row = _step(calls, 7)
    out = np.empty((1, 7, 8))
    merge.merge_into(layout, row[None], 1e-6, out)
    for site in range(7):
        tensors = [x for s, x, _ in calls if s == site]
        if not tensors:
            assert np.isnan(out[0, site]).all(), "a site without calls is a row of NaN"
            continue
        unit_dim = next(u for s, _, u in calls if s == site)
        joined = torch.cat([t.double() for t in tensors])  # calls of a site are merged along the batch
        want = reference_statistics(joined, unit_dim)
        # float32 values are summed in float32 blocks (the kernel's accuracy, not the merge's)
        assert_statistics_close(dict(zip(actprobe.STATISTICS, out[0, site].tolist())), want, rtol=1e-6)


def test_without_the_extension_the_torch_merge_fills_the_rows(monkeypatch):
    gen = torch.Generator().manual_seed(7)
    layout, row = _step(_calls(gen), 7)
    want = merge.merge_rows(layout, row[None], 1e-6).numpy()
    monkeypatch.setattr(merge, "_cmerge", None)
    got = np.full_like(want, -1.0)
    merge.merge_into(layout, row[None], 1e-6, got)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.nan_to_num(got), np.nan_to_num(want))


def test_a_ring_hands_its_buffers_over_and_gets_them_back():
    layout, row = _step([(0, torch.randn(4, 3), -1)], 1)
    ring = merge.PartialRing((), layout, 2, torch.device("cpu"), buffers=3)
    ring.add(row)
    first = ring.hand_over(1e-6)
    assert first is not None and first.n == 1 and ring.filled == 0
    ring.add(row)
    ring.add(row)
    second = ring.hand_over(1e-6)
    assert second is not None and second.n == 2 and second.buffer is not first.buffer
    ring.add(row)
    assert ring.hand_over(1e-6) is None, "two buffers are out, the third is the ring's: the caller merges"
    assert ring.filled == 1, "a refused hand-over leaves the rows in the ring"
    stats = np.empty((3, 1, 8))
    buffer = first.buffer
    first.merge_into(stats)
    assert first.buffer is None, "merging releases the buffer"
    third = ring.hand_over(1e-6)
    assert third is not None and third.n == 1 and ring.rows is buffer, "a released buffer is filled again"
    second.release()
    second.release()  # idempotent


def _spy_on_merges(monkeypatch) -> list[str]:
    """The names of the threads that merge rows, from now on."""
    threads: list[str] = []
    for name in ("merge_into", "merge_rows", "merge_partials"):
        real = getattr(merge, name)

        def spy(*args, real=real, **kwargs):
            threads.append(threading.current_thread().name)
            return real(*args, **kwargs)
        monkeypatch.setattr(merge, name, spy)
    return threads


def _train(model, probe, steps: int, seed: int, *, wait_every: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        model(torch.randn(4, 8, generator=gen)).sum().backward()
        probe.step()
        if wait_every and (step + 1) % wait_every == 0:
            probe.flush(wait=True)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def test_a_cpu_probe_merges_on_the_writer_thread(tmp_path, monkeypatch):
    threads = _spy_on_merges(monkeypatch)
    model = _model()
    with actprobe.Probe(model, tmp_path / "run.h5", flush_every=10) as probe:
        _train(model, probe, 30, 0, wait_every=10)  # the writer keeps up: every buffer is back in time
    assert threads and set(threads) == {"actprobe-writer"}
    assert actprobe.read(tmp_path / "run.h5").rows == 30


def test_when_the_writer_falls_behind_the_training_thread_merges_and_no_row_is_lost(tmp_path, monkeypatch):
    model = _model()
    with actprobe.Probe(model, tmp_path / "reference.h5", flush_every=4) as probe:
        _train(model, probe, 40, 1)
    want = actprobe.read(tmp_path / "reference.h5")

    threads = _spy_on_merges(monkeypatch)
    go_on = threading.Event()
    real = merge.Segment.merge_into
    monkeypatch.setattr(merge.Segment, "merge_into", lambda self, *out: (go_on.wait(60), real(self, *out)))
    model = _model()
    with actprobe.Probe(model, tmp_path / "run.h5", flush_every=4) as probe:
        _train(model, probe, 40, 1)  # the writer is stuck on its first segment: the ring's buffers run out
        assert "MainThread" in threads, "rows were merged on the training thread meanwhile"
        go_on.set()
    got = actprobe.read(tmp_path / "run.h5")
    assert got.rows == 40
    for name in want.stats:
        np.testing.assert_array_equal(got.stats[name][:], want.stats[name][:])


def test_an_arrangement_that_changes_every_step_holds_no_buffers_for_the_writer(tmp_path):
    """A site skipped on every other step: each step's ring is left part-filled. It is merged at once;
    handing its buffer over held memory for rows never written (gigabytes at flush_every=1000)."""

    class Alternating(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.step = torch.nn.Linear(8, 256), torch.nn.Linear(256, 256), 0

        def forward(self, x):
            h = self.a(x)
            return self.b(h) if self.step % 2 == 0 else h

    model = Alternating()
    held = 0
    with actprobe.Probe(model, tmp_path / "run.h5", flush_every=1000, flush_seconds=1e9) as probe:
        for step in range(60):
            model.step = step
            model(torch.randn(4, 8)).sum().backward()
            probe.step()
            held = max(held, probe._recorder.stage.deferred_bytes)
    assert held == 0
    run = actprobe.read(tmp_path / "run.h5")
    assert run.rows == 60 and np.isnan(run.stats["std"][1::2, 1]).all() and np.isfinite(run.stats["std"][::2, 1]).all()


UNITS_OF = {0: 8, 1: 12, 2: 3, 4: 6, 6: 6}  # the unit sites of _calls and their units (site 3 has none)


def _unit_columns(sites: int) -> np.ndarray:
    columns = np.full((sites, 2), -1, dtype=np.int64)
    first = 0
    for site in range(sites):
        if site in UNITS_OF:
            columns[site] = (first, UNITS_OF[site])
            first += UNITS_OF[site]
    return columns


def _partials_of(calls, sites: int, units: np.ndarray, *, use_c: bool):
    arena = Arena(torch.device("cpu"))
    kernel = MomentKernel(0.05, use_c=True, use_triton=False)
    partials = [(site, kernel(x, unit_dim, arena)) for site, x, unit_dim in calls]
    layout = merge.Layout.build(partials, sites, torch.device("cpu"), units=units)
    row = arena.row().clone()[None]
    if not use_c:
        return [t.numpy() for t in merge.merge_partials(layout, row, 1e-6)]
    out = [np.empty((1, sites, 8)), np.empty((1, sites, merge.PARTIAL_VALUES)),
           np.empty((1, layout.unit_total, merge.UNIT_VALUES))]
    merge.merge_into(layout, row, 1e-6, *out)
    return out


@needs_c
def test_the_c_merge_writes_the_partials_that_the_torch_merge_computes():
    calls = _calls(torch.Generator().manual_seed(11))
    units = _unit_columns(7)
    for got, want in zip(_partials_of(calls, 7, units, use_c=True), _partials_of(calls, 7, units, use_c=False)):
        assert np.array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("use_c", [True, False] if merge._cmerge is not None else [False])
@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_partials_combine_into_the_statistics_of_the_whole_batch(ranks, use_c):
    """Each call's batch split over ranks (unevenly, one rank empty at a site): the ranks' partials,
    combined, are the float64 reference's statistics of the whole batch — the dead units too."""
    from actprobe.runfile.ranks import combine

    calls = _calls(torch.Generator().manual_seed(12 + ranks))
    units = _unit_columns(7)
    per_rank = [[] for _ in range(ranks)]
    for site, x, unit_dim in calls:
        cuts = np.linspace(0, x.shape[0], ranks + 1).round().astype(int)
        cuts[1] = min(cuts[1] + 1, x.shape[0])  # uneven
        for r in range(ranks):
            if cuts[r + 1] > cuts[r]:
                per_rank[r].append((site, x[cuts[r]:cuts[r + 1]], unit_dim))
    merged = [_partials_of(rank_calls, 7, units, use_c=use_c) for rank_calls in per_rank]
    stats = combine([m[1] for m in merged], [m[2] for m in merged], units, 1e-6)
    for site in range(7):
        tensors = [x for s, x, _ in calls if s == site]
        if not tensors:
            assert np.isnan(stats[0, site]).all()
            continue
        unit_dim = next(u for s, _, u in calls if s == site)
        want = reference_statistics(torch.cat([t.double() for t in tensors]), unit_dim)
        assert_statistics_close(dict(zip(actprobe.STATISTICS, stats[0, site].tolist())), want, rtol=1e-6)


def test_a_unit_constant_on_each_rank_but_not_across_them_is_not_dead():
    from actprobe.runfile.ranks import combine

    units = np.array([[0, 5]], dtype=np.int64)
    merged = []
    for r in range(3):
        x = torch.randn(10 + r, 5, generator=torch.Generator().manual_seed(r))
        x[:, 1] = 0.25  # dead everywhere
        x[:, 3] = float(r)  # constant on each rank, a different constant on each
        merged.append(_partials_of([(0, x, -1)], 1, units, use_c=merge._cmerge is not None))
        assert merged[-1][0][0, 0, 6] == pytest.approx(2 / 5)  # the rank's own row: two dead units
    stats = combine([m[1] for m in merged], [m[2] for m in merged], units, 1e-6)
    assert stats[0, 0, 6] == pytest.approx(1 / 5)


def test_without_the_extension_merge_into_fills_the_partials_too(monkeypatch):
    calls = _calls(torch.Generator().manual_seed(13))
    units = _unit_columns(7)
    want = _partials_of(calls, 7, units, use_c=False)
    monkeypatch.setattr(merge, "_cmerge", None)
    got = _partials_of(calls, 7, units, use_c=True)  # merge_into, which now falls back to torch
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.nan_to_num(g, nan=-7.0), np.nan_to_num(w, nan=-7.0))
