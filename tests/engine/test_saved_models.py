"""A model saved whole (``torch.save(model)``, pickle) while a probe records: the save works, the loaded model
computes what the original computes, and it records nothing (its hooks are ``InertHook``s; modules recorded
directly, engine/dispatch.py, hold none)."""

from __future__ import annotations

import io
import pickle

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.engine.eager import InertHook
from actprobe.stats import c_backend
from conftest import paper_cnn, record_path


def _hooks(model: nn.Module) -> list[object]:
    return [hook for module in model.modules() for hooks in (module._forward_hooks, module._forward_pre_hooks)
            for hook in hooks.values()]


def _record(path, *, save: bool, copies: list[nn.Module] | None = None) -> nn.Module:
    """Three SGD steps of the paper's CNN, recorded every step; with ``save``, the model is saved whole in the
    middle of each step (after backward, before ``step()``) and loaded again, and the loaded copy runs a forward
    in training mode in the next step: a copy that must leave the file as it would be without it."""
    torch.manual_seed(0)
    model = paper_cnn()
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loaded = None
    with actprobe.Probe(model, path) as probe:
        for _ in range(3):
            x = torch.randn(16, 1, 28, 28, generator=gen)
            if loaded is not None:
                loaded(torch.randn(16, 1, 28, 28)).sum().backward()
            nn.functional.cross_entropy(model(x), torch.randint(0, 10, (16,), generator=gen)).backward()
            if save:
                buffer = io.BytesIO()
                torch.save(model, buffer)
                buffer.seek(0)
                loaded = torch.load(buffer, weights_only=False)
                if copies is not None:
                    with torch.no_grad():  # not recorded (gradients off), and the same numbers
                        probe_input = torch.randn(8, 1, 28, 28)
                        assert torch.equal(loaded(probe_input), model(probe_input))
                    copies.append(loaded)
            opt.step()
            opt.zero_grad()
            probe.step()
    return model


@pytest.mark.parametrize("path", ["C direct", "C hooks", "Python hooks"])
def test_a_model_saved_whole_while_recording_loads_computes_the_same_and_records_nothing(tmp_path, monkeypatch,
                                                                                        path):
    if path == "Python hooks":
        monkeypatch.setattr(c_backend, "lane_hook", None)  # every module's hook a Python function
    elif c_backend.lane_hook is None:
        pytest.skip("built without the C extension")
    if not record_path(monkeypatch, "direct" if path == "C direct" else "hooks") and path == "C direct":
        pytest.skip("built without the C extension's direct calls")
    copies: list[nn.Module] = []
    model = _record(tmp_path / "saved.h5", save=True, copies=copies)
    _record(tmp_path / "reference.h5", save=False)
    assert copies
    loaded = copies[-1]
    assert all(isinstance(hook, InertHook) for copy in copies for hook in _hooks(copy))
    # the root's pre-hook, and the forward hooks of the sites' modules unless they are recorded directly (then the
    # modules hold nothing of the probe)
    leaves = sum(1 for name, m in model.named_modules() if name and next(m.children(), None) is None)
    assert len(_hooks(loaded)) == 1 + (0 if path == "C direct" else leaves)
    assert all("_call_impl" not in vars(m) and "forward" not in vars(m) for copy in copies for m in copy.modules())
    with h5py.File(tmp_path / "saved.h5", "r") as saved, h5py.File(tmp_path / "reference.h5", "r") as reference:
        assert list(saved["sites"].asstr()[()]) == list(reference["sites"].asstr()[()])
        for name in reference["stats"]:
            np.testing.assert_array_equal(saved["stats"][name][()], reference["stats"][name][()])


@pytest.mark.parametrize("path", ["direct", "hooks"])
def test_pickle_of_a_recording_model_gives_inert_hooks_and_the_probe_goes_on(tmp_path, monkeypatch, path):
    direct = record_path(monkeypatch, path)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        for _ in range(2):
            model(torch.randn(5, 4)).sum().backward()
            copy = pickle.loads(pickle.dumps(model))
            probe.step()
    assert actprobe.read(tmp_path / "run.h5").rows == 2 and probe.error is None
    hooks = _hooks(copy)
    assert len(hooks) == (1 if direct else 4) and all(type(hook) is InertHook for hook in hooks)
    assert all(hook(copy, (torch.ones(1),), {}, torch.ones(1)) is None for hook in hooks)
