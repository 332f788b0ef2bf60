"""``row_nonfinite``: the rows where some output held a NaN or an Inf, kept by the writer, so that the
non-finite rule reads those rows alone; it must find what a scan of every row finds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.analysis.rules import evaluate


class Poison(nn.Module):
    """A NaN in its output at the given calls (one value of the first sample)."""

    def __init__(self, at: set[int]) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls - 1 not in self.at:
            return x
        poisoned = x.clone()
        poisoned[0, 0] = float("nan")
        return poisoned


@pytest.mark.parametrize("bad_steps", [set(), {3, 7}, set(range(5, 90))])
def test_flagged_rows_find_what_a_scan_finds(tmp_path, bad_steps):
    model = nn.Sequential(nn.Linear(4, 6), Poison(bad_steps), nn.ReLU(), nn.Linear(6, 2))
    with actprobe.Probe(model, tmp_path / "run.h5", flush_every=16) as probe:
        for _ in range(100):
            model(torch.randn(8, 4)).sum()
            probe.step()
    run = actprobe.read(tmp_path / "run.h5")
    scanned = np.asarray(run.stats["nonfinite"][:])
    np.testing.assert_array_equal(run.row_nonfinite, (scanned > 0).any(axis=1))
    assert sorted(np.flatnonzero(run.row_nonfinite)) == sorted(bad_steps)
    with_flags = [o for o in evaluate(run) if o.rule == "non-finite"]
    without = [o for o in evaluate(dataclasses.replace(run, row_nonfinite=None)) if o.rule == "non-finite"]
    assert with_flags == without and bool(with_flags) == bool(bad_steps)
    if bad_steps:
        assert with_flags[0].evidence["rows_with_nonfinite"] == len(bad_steps)
