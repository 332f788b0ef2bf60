"""Completing a closed run file through runfile.storage.finish_run (what the recipes do after training)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.errors import RunFileError
from actprobe.runfile.storage import finish_run


def _recorded(path):
    model = nn.Sequential(nn.Linear(3, 2))
    with actprobe.Probe(model, path) as probe:
        for _ in range(2):
            model(torch.randn(4, 3)).sum().backward()
            probe.step()
    return model


def test_finish_run_adds_epochs_and_attributes(tmp_path):
    path = tmp_path / "run.h5"
    _recorded(path)
    finish_run(path, {"epoch": [0, 1], "steps": [1, 2], "val_loss": [0.5, 0.25]}, {"complete": True, "seconds": 1.5})
    with h5py.File(path, "r") as f:  # the reference: plain h5py
        assert f["epochs/epoch"].dtype == np.int64 and f["epochs/steps"][()].tolist() == [1, 2]
        assert f["epochs/val_loss"].dtype == np.float64 and f["epochs/val_loss"][()].tolist() == [0.5, 0.25]
        assert bool(f.attrs["complete"]) and f.attrs["seconds"] == 1.5
    run = actprobe.read(path)
    assert run.rows == 2 and run.epochs["val_loss"].tolist() == [0.5, 0.25]


def test_finish_run_is_refused_while_a_probe_writes_the_file(tmp_path):
    path = tmp_path / "run.h5"
    _recorded(path)
    model = nn.Sequential(nn.Linear(3, 2))
    with actprobe.Probe(model, path, overwrite=True):
        with pytest.raises(RunFileError, match="being written by another probe"):
            finish_run(path, {"epoch": [0]}, {"complete": True})
