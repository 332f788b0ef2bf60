"""What a probe says when rows are not there yet or never came: a live file before and after its
first commit, forwards without step(), and a probe that recorded nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import actprobe
from actprobe.cli import app


def _forward(model):
    model(torch.randn(4, 3)).sum().backward()


def test_a_live_file_before_and_after_its_first_commit(tmp_path):
    path = tmp_path / "run.h5"
    model = nn.Sequential(nn.Linear(3, 2))
    runner = CliRunner()
    with actprobe.Probe(model, path, flush_every=1000, flush_seconds=float("inf")) as probe:
        with pytest.raises(actprobe.FormatError, match="no such file yet; a probe is recording into it"):
            actprobe.read(path)
        _forward(model)
        probe.step()
        probe._sink.wait()  # the writer thread has created the file (no row is committed before a flush)
        run = actprobe.read(path)
        assert run.rows == 0 and run.sites == ["0"] and run.stats["mean"].shape == (0, 1)
        shown = runner.invoke(app, ["show", str(path)])
        assert shown.exit_code == 0
        assert shown.output.strip() == f"{path}: no rows committed yet (a probe is recording into it)"
        assert runner.invoke(app, ["diagnose", str(path)]).exit_code == 0
        plotted = runner.invoke(app, ["plot", str(path), "--out", str(tmp_path)])
        assert plotted.exit_code == 2 and "no rows committed yet" in plotted.stderr
    assert actprobe.read(path).rows == 1


def test_forwards_without_a_step_are_reported(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.warns(actprobe.ActprobeWarning, match="step\\(\\) was never called after the recorded forwards"):
        with actprobe.Probe(model, tmp_path / "a.h5"):
            _forward(model)
    assert not (tmp_path / "a.h5").exists()
    with pytest.warns(actprobe.ActprobeWarning, match="the forwards after the last probe.step\\(\\) were not recorded"):
        with actprobe.Probe(model, tmp_path / "b.h5") as probe:
            _forward(model)
            probe.step()
            _forward(model)
    assert actprobe.read(tmp_path / "b.h5").rows == 1


def test_only_eval_forwards_are_reported(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.warns(actprobe.ActprobeWarning, match="every forward ran in eval mode or without gradients"):
        with actprobe.Probe(model, tmp_path / "c.h5") as probe:
            with torch.no_grad():
                model(torch.randn(4, 3))
            probe.step()
    assert not (tmp_path / "c.h5").exists()
