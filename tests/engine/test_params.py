"""Parameters and updates (``Probe(params=True, optimizer=…)``): each parameter's values and gradient
before the optimizer's step and the step's change, against float64 references from parameter copies
taken around ``optimizer.step()``; the update-to-data ratio; only recorded steps; training unchanged."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from conftest import assert_statistics_close, one_recorded_step, paper_cnn, reference_statistics


def _train(model, optimizer, probe, steps: int, seed: int = 0, every: int = 1) -> list[dict]:
    """Steps of training; returns, for each recorded step, copies of every parameter and gradient
    taken just before and after ``optimizer.step()`` (the independent reference)."""
    gen = torch.Generator().manual_seed(seed)
    kept = []
    for step in range(steps):
        x = torch.randn(16, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        before = [p.detach().clone() for p in model.parameters()]
        grads = [p.grad.detach().clone() for p in model.parameters()]
        optimizer.step()
        if step % every == 0:
            kept.append({"before": before, "grads": grads, "after": [p.detach().clone() for p in model.parameters()]})
        if probe is not None:
            probe.step()
    return kept


@pytest.mark.parametrize("make", [lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
                                  lambda ps: torch.optim.Adam(ps, lr=1e-3)], ids=["SGD momentum", "Adam"])
def test_parameter_statistics_and_update_ratios_equal_the_reference(make, tmp_path):
    torch.manual_seed(0)
    model = paper_cnn()
    optimizer = make(model.parameters())
    with actprobe.Probe(model, tmp_path / "run.h5", params=True, optimizer=optimizer, every=2) as probe:
        kept = _train(model, optimizer, probe, 5, every=2)
    run = actprobe.read(tmp_path / "run.h5")
    assert run.params == [name for name, _ in model.named_parameters()] and list(run.step) == [0, 2, 4]
    ratio = run.update_ratio()
    for row, ref in enumerate(kept):
        for k, name in enumerate(run.params):
            before, after, grad = ref["before"][k], ref["after"][k], ref["grads"][k]
            for group, tensor in (("param_stats", before), ("param_grad_stats", grad), ("update_stats", after - before)):
                got = {s: float(run.param_stats[group][s][row, k]) for s in actprobe.STATISTICS}
                try:
                    assert_statistics_close(got, reference_statistics(tensor, None), rtol=1e-5)
                except AssertionError as exc:
                    raise AssertionError(f"{group} of {name}, row {row}: {exc}") from None
            want = (after - before).double().std(unbiased=False) / before.double().std(unbiased=False)
            assert ratio[row, k] == pytest.approx(float(want), rel=1e-4), name


def test_training_with_parameter_statistics_is_bit_identical_and_keeps_no_copy(tmp_path):
    torch.manual_seed(1)
    model = paper_cnn()
    reference = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with actprobe.Probe(model, tmp_path / "run.h5", params=True, optimizer=optimizer, grads=True) as probe:
        _train(model, optimizer, probe, 3)
        assert probe._params._before is None, "the copies of the parameters are dropped after each step"
    _train(reference, torch.optim.Adam(reference.parameters(), lr=1e-3), None, 3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    run = actprobe.read(tmp_path / "run.h5")
    assert run.has_grads and len(run.params) == 10 and run.rows == 3


def test_params_without_an_optimizer_is_an_option_error(tmp_path):
    with pytest.raises(actprobe.OptionError, match="optimizer"):
        actprobe.Probe(nn.Linear(2, 2), tmp_path / "run.h5", params=True)
    with pytest.raises(actprobe.OptionError, match="torch.optim.Optimizer"):
        actprobe.Probe(nn.Linear(2, 2), tmp_path / "run2.h5", params=True, optimizer="adam")


def test_a_file_with_part_of_the_parameter_groups_is_refused(tmp_path):
    model = nn.Sequential(nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with actprobe.Probe(model, tmp_path / "run.h5", params=True, optimizer=optimizer) as probe:
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        probe.step()
    assert actprobe.read(tmp_path / "run.h5").param_stats["update_stats"]["count"][0, 0] == 8
    with h5py.File(tmp_path / "run.h5", "r+") as f:
        del f["update_stats"]
    with pytest.raises(actprobe.FormatError, match="update_stats"):
        actprobe.read(tmp_path / "run.h5")


def test_a_run_without_params_says_so(tmp_path):
    one_recorded_step(tmp_path / "run.h5")
    run = actprobe.read(tmp_path / "run.h5")
    assert run.params == [] and run.param_stats == {}
    with pytest.raises(actprobe.FormatError, match="no parameter statistics"):
        run.update_ratio()
    assert np.isfinite(np.asarray(run.stats["std"])).all()


def test_a_learning_rate_far_too_small_is_named_by_show_and_diagnose(tmp_path):
    from typer.testing import CliRunner

    from actprobe.analysis.diagnose import diagnose
    from actprobe.cli import app

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    with actprobe.Probe(model, tmp_path / "run.h5", params=True, optimizer=optimizer) as probe:
        for _ in range(5):
            optimizer.zero_grad()
            model(torch.randn(32, 8)).pow(2).sum().backward()
            optimizer.step()
            probe.step()
    run = actprobe.read(tmp_path / "run.h5")
    (finding,) = [f for f in diagnose(run) if f.rule == "update-ratio"]
    assert set(finding.sites) == {"0.weight", "2.weight"}, "weights only: biases start constant"
    want = np.median(run.update_ratio()[1:, 0])
    assert finding.evidence["update_ratio"]["0.weight"] == pytest.approx(want, rel=1e-3) and want < 1e-5
    shown = CliRunner().invoke(app, ["show", str(tmp_path / "run.h5")], env={"COLUMNS": "160"})
    assert shown.exit_code == 0
    assert f"parameter 0.weight: update ratio {want:.2g} (too small)" in shown.stdout
    assert "2 warnings at 2 parameters" in shown.stdout


def test_sparse_gradients_are_left_out_and_recording_goes_on(tmp_path):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Embedding(50, 8, sparse=True), nn.Flatten(), nn.Linear(24, 2))
    sparse = torch.optim.SparseAdam(list(model[0].parameters()), lr=1e-2)
    with actprobe.Probe(model, tmp_path / "run.h5", params=True, optimizer=sparse) as probe:
        for _ in range(3):
            sparse.zero_grad()
            model(torch.randint(0, 50, (4, 3))).sum().backward()
            sparse.step()
            probe.step()
    assert probe.error is None
    run = actprobe.read(tmp_path / "run.h5")
    stats = run.param_stats
    assert np.isnan(stats["param_grad_stats"]["std"][:, 0]).all(), "the sparse gradient: NaN"
    assert (stats["param_stats"]["count"][:, 0] == 400).all() and np.isfinite(stats["update_stats"]["std"][:, 0]).all()
