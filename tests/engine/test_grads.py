"""Gradient statistics (``Probe(grads=True)``): every site's d(loss)/d(output) against the float64
reference of gradients captured independently — ``retain_grad()`` on every module output of a copy of
the model whose in-place modules are made out-of-place — on the paper CNN, a torchvision ResNet-18
(in-place ReLUs, one ReLU module called twice per block), a model calling one module twice, a small
transformer, with gradient accumulation and under ``torch.compile``; training stays bit-identical."""

from __future__ import annotations

import copy
import itertools

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from conftest import assert_statistics_close, one_recorded_step, paper_cnn, reference_statistics


class Twice(nn.Module):
    """One Linear called twice per forward: sites ``shared`` and ``shared#1``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 12)
        self.shared = nn.Linear(12, 12)
        self.act = nn.Tanh()
        self.out = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.shared(self.inp(x)))
        return self.out(self.shared(h) + h)


def tiny_transformer() -> nn.Module:
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Linear(8, 16), nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False),
                         nn.Linear(16, 4))


def resnet18() -> nn.Module:
    from torchvision.models import resnet18 as make

    return make(num_classes=10)


MODELS = {
    "paper CNN": (paper_cnn, (8, 1, 28, 28)),
    "ResNet-18": (resnet18, (2, 3, 32, 32)),
    "one module twice": (Twice, (16, 6)),
    "transformer": (tiny_transformer, (4, 5, 8)),
}


def _outputs(output: object, suffix: str = ""):
    """The floating-point tensors of a module's output and their site suffixes (``[0]``, ``[key]``)."""
    if isinstance(output, torch.Tensor):
        if output.is_floating_point():
            yield suffix, output
    elif isinstance(output, (tuple, list)):
        for i, item in enumerate(output):
            yield from _outputs(item, f"{suffix}[{i}]")
    elif isinstance(output, dict):
        for key, item in output.items():
            yield from _outputs(item, f"{suffix}[{key}]")


def reference_gradients(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Each module output's gradient, by site name, over the batches of one step (one backward per
    batch), captured with ``retain_grad()`` on a copy whose in-place modules work out of place."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False  # same numbers; every output its own tensor
    kept: dict[str, list[torch.Tensor]] = {}
    calls: dict[str, int] = {}
    model.register_forward_pre_hook(lambda *_: calls.clear())

    def hook(name):
        def keep(module, args, output):
            index = calls.get(name, 0)
            calls[name] = index + 1
            for suffix, tensor in _outputs(output):
                if tensor.requires_grad:
                    tensor.retain_grad()
                    kept.setdefault((name if index == 0 else f"{name}#{index}") + suffix, []).append(tensor)
        return keep

    for name, module in model.named_modules():
        if name:
            module.register_forward_hook(hook(name))
    for x in batches:
        model(x).float().pow(2).mean().backward()
    return {site: [t.grad for t in tensors if t.grad is not None] for site, tensors in kept.items()}


def record(model: nn.Module, batches: list[torch.Tensor], path, **options) -> actprobe.Run:
    with actprobe.Probe(model, path, grads=True, **options) as probe:
        for x in batches:
            model(x).float().pow(2).mean().backward()
        probe.step()
    return actprobe.read(path)


def check_against_reference(run: actprobe.Run, want: dict[str, list[torch.Tensor]]) -> int:
    checked = 0
    for column, site in enumerate(run.sites):
        got = {name: float(run.grad_stats[name][0, column]) for name in actprobe.STATISTICS}
        grads = want.get(site, [])
        if not grads:
            assert np.isnan(got["count"]), f"{site}: no gradient reached it, yet a count was recorded"
            continue
        unit = int(run.site_unit_dims[column])
        joined = torch.cat([g.double() for g in grads]) if grads[0].ndim else torch.stack(grads).double()
        try:
            assert_statistics_close(got, reference_statistics(joined, None if unit == 0 else unit,
                                                              near_zero_eps=float(run.attrs["near_zero_eps"])))
        except AssertionError as exc:
            raise AssertionError(f"site {site}: {exc}") from None
        checked += 1
    return checked


@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_statistics_equal_the_float64_reference(name, tmp_path):
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make()
    batches = [torch.randn(shape)]
    want = reference_gradients(model, batches)
    run = record(model, batches, tmp_path / "run.h5")
    assert run.has_grads and run.attrs["grads"]
    checked = check_against_reference(run, want)
    assert checked >= len(run.sites) - 1, f"only {checked} of {len(run.sites)} sites had a gradient"


def test_in_place_relus_get_the_gradient_of_their_own_output(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    x = torch.randn(16, 4)
    run = record(model, [x], tmp_path / "run.h5", near_zero_eps=0.0)  # near_zero: the exact zeros
    # BatchNorm's output is changed in place by the ReLU: its gradient is the one before the ReLU
    # (zero where the ReLU cut), the ReLU's the one after (nowhere zero)
    assert 0.2 < run.grad_stats["near_zero"][0, 1] < 0.8 and run.grad_stats["near_zero"][0, 2] == 0
    check_against_reference(run, reference_gradients(model, [x]))


def test_gradient_accumulation_merges_every_backward_of_the_step(tmp_path):
    torch.manual_seed(2)
    model = Twice()
    batches = [torch.randn(8, 6), torch.randn(8, 6) * 3]
    want = reference_gradients(model, batches)
    run = record(model, batches, tmp_path / "run.h5")
    assert run.stats["count"][0, run.sites.index("inp")] == 2 * 8 * 12
    check_against_reference(run, want)


def test_training_with_gradient_statistics_is_bit_identical(tmp_path):
    torch.manual_seed(3)
    model = resnet18()
    reference = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(4)
    data = [(torch.randn(2, 3, 32, 32, generator=gen), torch.randint(0, 10, (2,), generator=gen)) for _ in range(3)]

    def train(net, probe=None):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for x, y in data:
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            if probe is not None:
                probe.step()

    with actprobe.Probe(model, tmp_path / "run.h5", grads=True) as probe:
        train(model, probe)
    train(reference)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), reference.buffers()))
    assert actprobe.read(tmp_path / "run.h5").rows == 3


def test_unrecorded_steps_and_old_graphs_leave_no_gradient_behind(tmp_path):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    with actprobe.Probe(model, tmp_path / "run.h5", grads=True, every=2) as probe:
        kept = model(torch.randn(3, 4)).sum()  # recorded step 0's forward, its backward comes later
        probe.step()
        model(torch.randn(3, 4)).sum().backward()  # step 1: not recorded
        kept.backward()  # an old graph, in step 1: not step 2's gradients
        probe.step()
        x = torch.randn(5, 4)
        model(x).sum().backward()  # step 2
        probe.step()
    run = actprobe.read(tmp_path / "run.h5")
    assert list(run.step) == [0, 2]
    assert np.isnan(run.grad_stats["count"][0]).all(), "step 0 had no backward before its step() ended it"
    assert list(run.grad_stats["count"][1]) == [5 * 8, 5 * 8, 5 * 1]


def test_without_grads_the_file_has_no_grad_stats_and_readers_say_so(tmp_path):
    one_recorded_step(tmp_path / "run.h5")
    run = actprobe.read(tmp_path / "run.h5")
    assert not run.has_grads and run.grad_stats == {}
    with h5py.File(tmp_path / "run.h5") as f:
        assert "grad_stats" not in f
    with pytest.raises(actprobe.FormatError, match="no gradient statistics"):
        run.stat("std", grad=True)


def test_a_failing_gradient_hook_warns_and_the_backward_goes_on(tmp_path, monkeypatch):
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    reference = copy.deepcopy(model)
    x = torch.randn(2, 4)
    with actprobe.Probe(model, tmp_path / "run.h5", grads=True) as probe:
        model(x).sum().backward()
        probe.step()
        kernel_type = type(probe._recorder.kernel)
        real = kernel_type.__call__

        def broken_for_gradients(self, tensor, unit_dim, arena):  # outputs have a grad_fn, gradients not
            if tensor.grad_fn is None:
                raise RuntimeError("gradient kernel exploded")
            return real(self, tensor, unit_dim, arena)

        monkeypatch.setattr(kernel_type, "__call__", broken_for_gradients)
        with pytest.warns(actprobe.ActprobeWarning, match="gradient kernel exploded"):
            model(x).sum().backward()
            probe.step()
    reference(x).sum().backward()
    reference(x).sum().backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(model.parameters(), reference.parameters()))
    assert actprobe.read(tmp_path / "run.h5").rows == 1


@pytest.mark.slow
def test_a_compiled_model_records_the_same_gradients(tmp_path):
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 2))
    x = torch.randn(10, 6)
    want = reference_gradients(model, [x])
    compiled = torch.compile(model)
    with actprobe.Probe(model, tmp_path / "run.h5", grads=True) as probe:
        compiled(x).float().pow(2).mean().backward()
        probe.step()
    check_against_reference(actprobe.read(tmp_path / "run.h5"), want)


def _train_paper_cnn(scheme: str, path) -> actprobe.Run:
    """20 Adam steps of the paper's CNN on Fashion-MNIST under an init scheme, gradients recorded."""
    from actprobe.datasets import loader
    from actprobe.init import init_weights

    torch.manual_seed(0)
    model = paper_cnn()
    init_weights(model, scheme)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = itertools.cycle(loader("fashion-mnist", batch_size=128, seed=0, per_class=60))  # 5 batches, again
    with actprobe.Probe(model, path, grads=True) as probe:
        for _ in range(20):
            x, y = next(batches)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            probe.step()
    return actprobe.read(path)


def test_diagnose_names_the_vanishing_gradient_under_default_init_and_not_under_kaiming(tmp_path):
    from actprobe.analysis.diagnose import diagnose

    default = _train_paper_cnn("torch-default", tmp_path / "default.h5")
    findings = {f.rule: f for f in diagnose(default)}
    gradient = findings["vanishing-gradient"]
    relus = [name for name, kind in zip(default.sites, default.site_module_types) if kind == "ReLU"]
    assert set(gradient.sites) == set(relus) and gradient.evidence["path"][0] == relus[0]
    sizes = gradient.evidence["size"]
    assert sizes[0] < sizes[-1] / 10, "the first layer's gradient is a tenth of the last's, or less"
    assert "vanishing gradients" in gradient.message and "first layer" in gradient.message
    kaiming = _train_paper_cnn("kaiming", tmp_path / "kaiming.h5")
    assert not {"vanishing-gradient", "exploding-gradient"} & {f.rule for f in diagnose(kaiming)}


def test_actprobe_run_grads_and_show_prints_the_gradient_column(tmp_path):
    from typer.testing import CliRunner

    from actprobe.cli import app
    from conftest import assert_one_line_error

    model_file = tmp_path / "m.py"
    model_file.write_text("import torch\nfrom torch import nn\n\n"
                          "def model():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), "
                          "nn.Linear(32, 10))\n\n"
                          "def data():\n    from actprobe.datasets import loader\n"
                          "    return loader('fashion-mnist', batch_size=32, per_class=10)\n")
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(model_file), "--grads", "--steps", "3", "--out", str(tmp_path / "r.h5")])
    assert result.exit_code == 0, result.output
    run = actprobe.read(tmp_path / "r.h5")
    # the Flatten of the input gets no gradient (the input needs none): NaN, the others all have one
    assert run.has_grads and run.rows == 3 and np.isnan(run.grad_stats["std"][2, 0])
    assert np.isfinite(run.grad_stats["std"][2, 1:]).all()
    shown = runner.invoke(app, ["show", str(tmp_path / "r.h5")], env={"COLUMNS": "160"})
    assert shown.exit_code == 0 and "grad std" in shown.stdout
    first, last = run.grad_stats["std"][0, 1], run.grad_stats["std"][2, 1]
    assert f"{first:.3g} → {last:.3g}" in shown.stdout
    assert_one_line_error(runner.invoke(app, ["run", str(model_file), "--grads", "--init-check", "--out",
                                              str(tmp_path / "i.h5")]), "--grads", "init check")


@pytest.mark.parametrize("removed, message", [("grad_stats/dead", "grad_stats/dead"),
                                               ("grad_stats", "grads=True but has no 'grad_stats'")])
def test_a_file_with_part_of_its_gradient_statistics_is_refused_in_one_line(tmp_path, removed, message):
    one_recorded_step(tmp_path / "run.h5", grads=True)
    with h5py.File(tmp_path / "run.h5", "r+") as f:
        del f[removed]
    with pytest.raises(actprobe.FormatError, match=message):
        actprobe.read(tmp_path / "run.h5")


class LearnedPosition(nn.Module):
    """Returns its own parameter: a leaf tensor, on which a gradient hook would stay for good."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(4, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table


def test_hooks_on_leaf_outputs_go_when_the_step_ends_and_at_close(tmp_path):
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos, self.lin = LearnedPosition(), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x + self.pos(x))

    torch.manual_seed(8)
    model = Model()
    with actprobe.Probe(model, tmp_path / "run.h5", grads=True) as probe:
        for _ in range(20):
            model(torch.randn(4, 8)).sum().backward()
            probe.step()
            assert not model.pos.table._backward_hooks, "no gradient hook is left on the parameter"
    run = actprobe.read(tmp_path / "run.h5")
    column = run.sites.index("pos")
    assert np.isfinite(run.grad_stats["std"][:, column]).all(), "the leaf's gradient is recorded all the same"
    model(torch.randn(4, 8)).sum().backward()  # after close: nothing of the probe runs


def test_a_first_step_in_which_only_the_optimizer_ran_adds_no_row(tmp_path):
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(5, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with actprobe.Probe(model, tmp_path / "run.h5", params=True, optimizer=optimizer, grads=True) as probe:
        for step in range(4):
            model.train(step > 0)  # step 0 in eval mode: train_only leaves its forward out, the optimizer steps
            model(torch.randn(4, 5)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
            probe.step()
    run = actprobe.read(tmp_path / "run.h5")
    assert list(run.step) == [1, 2, 3] and run.sites == ["0"] and probe.error is None

