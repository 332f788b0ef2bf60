"""The callbacks' rows: metrics logged at steps a probe with ``every=k`` does not record wait for the next
recorded row; a later value of the same metric replaces the waiting one."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import actprobe
from actprobe.integrations.metrics import RowScalars


def test_waiting_metrics_join_the_next_recorded_row(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3))
    rows = RowScalars()
    with actprobe.Probe(model, tmp_path / "run.h5", every=3) as probe:
        for step in range(6):
            model(torch.randn(2, 3)).sum().backward()
            logged = {"val": float(step)} if step in (1, 2) else {}
            if step == 4:
                logged = {"lr": 0.5}
            rows.end_step(probe, logged, {"global_step": step + 1})
    run = actprobe.read(tmp_path / "run.h5")
    assert list(run.step) == [0, 3]
    np.testing.assert_array_equal(run.scalars["global_step"], [1, 4])
    np.testing.assert_array_equal(run.scalars["val"], [np.nan, 2.0])  # logged at steps 1 and 2: the later one
    assert "lr" not in run.scalars  # logged at step 4, and no recorded row came after it
