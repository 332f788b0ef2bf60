"""Probe(kernel=…): which statistics backend serves a probe, and that it says so (``Probe.kernels``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import actprobe
from actprobe.stats import c_backend
from conftest import assert_statistics_close, reference_statistics


def _record(path, kernel):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
    x = torch.randn(32, 6)
    with actprobe.Probe(model, path, kernel=kernel) as probe:
        model(x).sum().backward()
        probe.step()
        kernels = probe.kernels
    return actprobe.read(path), kernels, model[0](x)


@pytest.mark.parametrize("kernel", ["auto", "torch"])
def test_each_kernel_records_the_reference_statistics(tmp_path, kernel):
    run, kernels, linear_out = _record(tmp_path / "run.h5", kernel)
    expected = "C" if kernel == "auto" and c_backend.available() else "torch"
    assert kernels == (expected,)
    got = {name: float(run.stats[name][0, 0]) for name in actprobe.STATISTICS}
    assert_statistics_close(got, reference_statistics(linear_out, -1))


def test_an_unknown_kernel_is_an_option_error(tmp_path):
    with pytest.raises(actprobe.OptionError, match="kernel must be one of auto, torch, got 'fast'"):
        actprobe.Probe(nn.Linear(2, 2), tmp_path / "run.h5", kernel="fast")
    assert not (tmp_path / "run.h5.lock").exists()
