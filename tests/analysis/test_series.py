"""A long run drawn with a bounded number of points: bucket means, a min–max envelope that keeps every
spike, non-finite buckets marked; equal to NumPy on the whole array, read in bounded blocks."""

from __future__ import annotations

import numpy as np

import actprobe
from actprobe.analysis.series import series
from actprobe.runfile import lazy
from actprobe.runfile.format import STATISTICS, Site
from actprobe.runfile.storage import RunFileWriter


def long_file(path, rows: int = 5000, sites: int = 3):
    writer = RunFileWriter(path, sites=[Site(f"s{k}", "ReLU", -1) for k in range(sites)], scalar_names=[],
                           attributes={}, chunk_rows=100)
    rng = np.random.default_rng(0)
    stats = np.ones((rows, sites, len(STATISTICS)))
    stats[:, :, STATISTICS.index("std")] = 1 + 0.01 * rng.standard_normal((rows, sites))
    stats[:, :, STATISTICS.index("nonfinite")] = 0.0
    if rows > 4321:
        stats[1234, 2, STATISTICS.index("std")] = 50.0  # one spike
        stats[4321, 1, STATISTICS.index("nonfinite")] = 0.5  # one step with NaN
    writer.append(np.arange(rows) * 2, np.arange(rows) * 0.1, stats, np.zeros((rows, 0)))
    writer.close()
    return stats


def test_decimated_series_keeps_spikes_and_marks_nonfinite(tmp_path, monkeypatch):
    stats = long_file(tmp_path / "long.h5")
    monkeypatch.setattr(lazy, "SCAN_BYTES", 4 * 3 * 700)  # scan in blocks of ~700 rows: buckets cross blocks
    run = actprobe.read(tmp_path / "long.h5")
    data = series(run, "std", points=400)
    size = 13  # ceil(5000 / 400)
    assert data.decimated and len(data.step) == len(data.mean) == -(-5000 // size)
    std = stats[:, :, STATISTICS.index("std")].astype(np.float32).astype(np.float64)
    for b in (0, 94, len(data.step) - 1):
        rows = slice(b * size, min((b + 1) * size, 5000))
        np.testing.assert_allclose(data.mean[b], std[rows].mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(data.high[b], std[rows].max(axis=0), rtol=1e-6)
        assert data.step[b] == 2 * b * size
    assert data.high[:, 2].max() == 50.0 and data.high[1234 // size, 2] == 50.0  # the spike survives
    assert np.flatnonzero(data.nonfinite[:, 1]).tolist() == [4321 // size] and not data.nonfinite[:, [0, 2]].any()


def test_a_short_run_is_drawn_as_it_is(tmp_path):
    stats = long_file(tmp_path / "short.h5", rows=50)
    data = series(actprobe.read(tmp_path / "short.h5"), "std")
    assert not data.decimated and data.row.tolist() == list(range(1, 51))
    np.testing.assert_array_equal(data.mean, stats[:, :, STATISTICS.index("std")].astype(np.float32))
