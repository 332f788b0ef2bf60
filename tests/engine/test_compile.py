"""A probe on a torch.compile'd model: the hooks run eagerly at graph breaks, without recompiling,
and record what the compiled model computed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import actprobe
from conftest import paper_cnn, reference_statistics


@pytest.mark.slow
def test_compiled_model_is_recorded_without_recompiling(tmp_path):
    torch.manual_seed(0)
    model = paper_cnn()
    torch.manual_seed(0)
    twin = paper_cnn()  # eager, same weights: the reference for the first step
    captured = []
    for child in twin.children():
        child.register_forward_hook(lambda module, inputs, output: captured.append(output.detach()))
    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(2))
    twin(x)

    torch._dynamo.reset()
    compiled = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with actprobe.Probe(model, tmp_path / "c.h5") as probe:
            for _ in range(4):
                loss = torch.nn.functional.cross_entropy(compiled(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                probe.step(loss=loss)
    assert not [w for w in caught if "recompil" in str(w.message).lower() or "dynamo" in str(w.message).lower()]
    run = actprobe.read(tmp_path / "c.h5")
    assert run.rows == 4 and len(run.sites) == 11
    for site, output in enumerate(captured):
        want = reference_statistics(output, 1 if output.ndim == 4 else -1)
        for name in ("mean", "std", "min", "max", "near_zero", "dead"):
            got = float(run.stats[name][0, site])
            scale = max(abs(want[name]), want["std"]) if name == "mean" else abs(want[name])
            assert abs(got - want[name]) <= 1e-4 * scale + 1e-6, (site, name, got, want[name])
    assert np.all(np.diff(run.scalars["loss"]) < 0)  # it trains


@pytest.mark.slow
def test_a_compiled_function_recompiled_on_an_idle_step_still_records(tmp_path):
    """torch.compile of a function that calls the model does not guard on the modules' hooks: a graph
    compiled on a step without them (a new batch size on an idle step) would run without them on later
    recorded steps, which then recorded nothing. Once anything has been compiled, idle steps keep the
    (inactive) hooks."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    torch._dynamo.reset()

    @torch.compile(dynamic=False)  # one graph per batch size
    def loss_of(x, y):
        return torch.nn.functional.cross_entropy(model(x), y)

    gen = torch.Generator().manual_seed(3)
    with actprobe.Probe(model, tmp_path / "f.h5", every=2, grads=True) as probe:
        for step in range(12):
            batch = 16 + (step % 3) * 8  # sizes 16, 24, 32: each first seen on a recorded or an idle step
            x, y = torch.randn(batch, 32, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
            loss = loss_of(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=loss)
    run = actprobe.read(tmp_path / "f.h5")
    assert run.step.tolist() == [0, 2, 4, 6, 8, 10]
    assert np.isfinite(np.asarray(run.stats["std"])).all(), "every recorded step has every site"


@pytest.mark.slow
def test_hooks_run_under_every_stance_of_torch_compiler(tmp_path):
    """Under ``set_stance("eager_on_recompile")`` the frame callback inside ``torch.compiler.disable`` is
    False, not None: a hook that sent itself through the disabled wrapper whenever the callback was not
    None recursed until Python's stack ran out, out of the user's forward."""
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    compiled = torch.compile(model)
    inputs = [torch.randn(3, 4), torch.randn(5, 4), torch.randn(7, 4)]
    try:
        with actprobe.Probe(model, tmp_path / "s.h5") as probe:
            compiled(inputs[0]).sum().backward()
            probe.step()
            torch.compiler.set_stance("eager_on_recompile")
            for x in inputs[1:]:  # new shapes: recompilations, run eagerly instead
                compiled(x).sum().backward()
                probe.step()
    finally:
        torch.compiler.set_stance("default")
    run = actprobe.read(tmp_path / "s.h5")
    assert run.rows == 3 and probe.error is None
    for row, x in enumerate(inputs):
        with torch.no_grad():
            want = reference_statistics(model[0](x), -1)
        assert abs(float(run.stats["mean"][row, 0]) - want["mean"]) <= 1e-5 * max(abs(want["mean"]), want["std"])
