"""Statistics are read on demand: equal to h5py's values for every kind of index, only the blocks a view
needs are read, a replaced file is refused, and queued batches are committed together."""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest
from torch import nn

import actprobe
from actprobe.analysis.summary import summarize
from actprobe.runfile import lazy
from actprobe.runfile.format import STATISTICS, Site
from actprobe.runfile.storage import RunFileWriter
from actprobe.runfile import writer as writer_module
from actprobe.runfile.writer import BackgroundWriter
from conftest import one_recorded_step


class Rows:
    """A batch of staged rows, as the engine hands them to the writer thread."""

    def __init__(self, first: int, n: int, sites: int, gate: threading.Event | None = None) -> None:
        self.steps = np.arange(first, first + n, dtype=np.int64)
        self.times = self.steps.astype(np.float64)
        rng = np.random.default_rng(first)
        self._stats = rng.normal(size=(n, sites, len(STATISTICS)))
        self._gate, self.released = gate, False
        self.scalar_names: list[str] = []

    def ready(self) -> None:
        if self._gate is not None:
            self._gate.wait()

    def stats(self) -> np.ndarray:
        return self._stats

    def scalars(self) -> np.ndarray:
        return np.zeros((len(self.steps), 0))

    def hist(self) -> list:
        return []

    def partials(self) -> None:
        return None

    def release(self) -> None:
        self.released = True


def write_file(path, rows: int, sites: int, per_batch: int = 100) -> list[Rows]:
    opened = lambda: RunFileWriter(path, sites=[Site(f"s{k}", "Linear", -1) for k in range(sites)],  # noqa: E731
                                   scalar_names=[], attributes={}, chunk_rows=per_batch)
    writer = BackgroundWriter(opened)
    batches = [Rows(first, min(per_batch, rows - first), sites) for first in range(0, rows, per_batch)]
    for batch in batches:
        writer.submit(batch)
    writer.close()
    assert writer.error is None
    return batches


def test_every_kind_of_index_reads_what_h5py_reads(tmp_path):
    path = tmp_path / "big.h5"
    write_file(path, rows=1000, sites=7)
    run = actprobe.read(path)
    with h5py.File(path, "r") as f:
        want = f["stats/std"][()]
    std = run.stats["std"]
    assert isinstance(std, lazy.Statistic) and std.shape == (1000, 7) and len(std) == 1000
    for key in ((0, 3), (-1, 2), (999,), (slice(None), 4), (slice(250, 700), slice(1, 5)), (slice(None, None, 7), 0),
                ([5, 900, 5, 260], 6), (np.array([3, 1]), slice(None)), (slice(-30, None), [0, 6])):
        np.testing.assert_array_equal(std[key], want[key])
    np.testing.assert_array_equal(np.asarray(std), want)
    np.testing.assert_array_equal(run.stat("std", "s2"), want[:, 2])
    assert std.astype(np.float64).dtype == np.float64


def test_show_reads_the_first_and_last_rows_and_the_drift_windows_only(tmp_path, monkeypatch):
    path = tmp_path / "rows.h5"
    write_file(path, rows=5000, sites=5)
    run = actprobe.read(path)
    monkeypatch.setattr(lazy.Source, "span", lambda self, *a: pytest.fail(f"a whole read: {a}"))
    summarize(run)
    cached = next(iter(run.stats.values()))._source._cache
    blocks = {name: {b for stat, b in cached if stat == name} for name, _ in cached}
    first, last = 0, (5000 - 1) // lazy.BLOCK_ROWS
    windows = {1250 // lazy.BLOCK_ROWS, 1749 // lazy.BLOCK_ROWS, 4500 // lazy.BLOCK_ROWS}  # rows 1250–1749, 4500–4999
    windows |= set(range(min(windows), 1749 // lazy.BLOCK_ROWS + 1)) | set(range(4500 // lazy.BLOCK_ROWS, last + 1))
    assert blocks.pop("stats/std") == {first, last} | windows
    assert all(b == {first, last} for b in blocks.values()) and "stats/nonfinite" in blocks  # scanned, not cached


def test_long_drift_windows_are_read_as_sixteen_runs_of_rows(tmp_path, monkeypatch):
    """60,000 rows: each 6,000-row window is read as 16 runs of 256 rows (at most 2 blocks each), and its
    medians are those of exactly those rows (np.median on h5py's values)."""
    from actprobe.analysis import rules

    path = tmp_path / "long.h5"
    write_file(path, rows=60000, sites=3, per_batch=2000)
    run = actprobe.read(path)
    monkeypatch.setattr(lazy.Source, "span", lambda self, *a: pytest.fail(f"a whole read: {a}"))
    summarize(run)
    cached = next(iter(run.stats.values()))._source._cache
    std_blocks = {b for stat, b in cached if stat == "stats/std"}
    assert len(std_blocks) <= 2 + 2 * 16 * 2, "first, last, and at most 2 blocks per run of each window"
    with h5py.File(path, "r") as f:
        want = f["stats/std"][()]
    firsts = 15000 + np.linspace(0, 6000 - 256, 16).round().astype(int)
    rows = np.concatenate([np.arange(f, f + 256) for f in firsts])
    np.testing.assert_allclose(rules._medians(rules._window(run.stats["std"], 15000, 6000)),
                               np.median(want[rows].astype(np.float64), axis=0), rtol=0, atol=0)
    short = rules._window(run.stats["std"], 100, 4096)  # 4,096 rows: read whole
    np.testing.assert_array_equal(short, want[100:4196])


def test_a_file_replaced_after_reading_is_refused(tmp_path):
    model = one_recorded_step(tmp_path / "r.h5", nn.Sequential(nn.Linear(4, 4)))
    run = actprobe.read(tmp_path / "r.h5")
    one_recorded_step(tmp_path / "r.h5", model, overwrite=True)  # another run at the same path
    with pytest.raises(actprobe.FormatError, match="replaced"):
        run.stats["mean"][0, 0]


def test_batches_queued_during_a_commit_are_committed_together_and_close_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "MAX_GROUP", 64)  # (the fault-injection child sets 1)
    gate = threading.Event()
    commits = []
    original = RunFileWriter.append

    def counted(self, steps, *rest, **kwargs):
        commits.append(len(steps))
        original(self, steps, *rest, **kwargs)

    RunFileWriter.append = counted
    try:
        writer = BackgroundWriter(lambda: RunFileWriter(tmp_path / "g.h5", sites=[Site("a", "Linear", -1)],
                                                        scalar_names=[], attributes={}, chunk_rows=1))
        batches = [Rows(0, 1, 1, gate)] + [Rows(k, 1, 1) for k in range(1, 6)]
        for batch in batches:
            writer.submit(batch)
        closing = threading.Thread(target=writer.close)
        closing.start()  # the close request queues behind the batches
        gate.set()
        closing.join(timeout=30)
        assert not closing.is_alive()
    finally:
        RunFileWriter.append = original
    assert sum(commits) == 6 and len(commits) < 6 and all(b.released for b in batches)
    assert actprobe.read(tmp_path / "g.h5").step.tolist() == [0, 1, 2, 3, 4, 5]
