"""Steps that are not recorded run without hooks (PyTorch's fast call path); recorded steps get them
back and record exactly what they would have, eager or compiled."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.engine import dispatch
from actprobe.stats import c_backend
from conftest import one_recorded_step, record_path, reference_statistics


def hooked(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("compiled_before", [False, True])
@pytest.mark.parametrize("path", ["direct", "hooks"])
def test_unrecorded_steps_have_no_hooks_and_recorded_ones_do(tmp_path, monkeypatch, compiled_before, path):
    """Idle steps run without hooks, unless torch.compile has compiled something in this process (then they keep
    the hooks, inactive: see test_compile.py); recorded directly, with the swapped Module._call_impl, which stays in
    place from the first step until the probe closes (it calls the modules plainly on idle steps)."""
    direct = record_path(monkeypatch, path) and not compiled_before
    monkeypatch.setattr("actprobe.engine.hooks.dynamo_compiled", lambda: compiled_before)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    counts, swapped = [], []
    with actprobe.Probe(model, tmp_path / "r.h5", every=3) as probe:
        for _ in range(7):
            counts.append(hooked(model))
            swapped.append(nn.Module.__dict__["_call_impl"] is not dispatch.ORIGINAL_CALL_IMPL)
            model(torch.randn(5, 4)).sum().backward()
            probe.step()
    # 3 forward hooks and the root's pre-hook on steps 0, 3, 6 (and in between after a compile); recorded directly,
    # the root's pre-hook and the swapped _call_impl
    recorded = [1, 0, 0, 1, 0, 0, 1] if direct else [4, 0, 0, 4, 0, 0, 4]
    assert counts == ([4] * 7 if compiled_before else recorded)
    assert swapped == [direct] * 7
    assert hooked(model) == 0 and actprobe.read(tmp_path / "r.h5").step.tolist() == [0, 3, 6]
    assert nn.Module.__dict__["_call_impl"] is dispatch.ORIGINAL_CALL_IMPL


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_recorded_steps_after_idle_ones_record_the_same_numbers(tmp_path, compiled):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    run_model = torch.compile(model) if compiled else model
    inputs = [torch.randn(32, 8, generator=torch.Generator().manual_seed(k)) for k in range(5)]
    want = []
    with actprobe.Probe(model, tmp_path / "c.h5", every=2) as probe:
        for k, x in enumerate(inputs):
            if k % 2 == 0:
                with torch.no_grad():
                    hidden = model[1](model[0](x))
                want.append(reference_statistics(hidden, -1))
            run_model(x).sum().backward()
            model.zero_grad()
            probe.step()
    run = actprobe.read(tmp_path / "c.h5")
    assert run.step.tolist() == [0, 2, 4]
    column = run.sites.index("1")
    for row, reference in enumerate(want):
        for name in ("mean", "std", "min", "max", "near_zero"):
            np.testing.assert_allclose(run.stats[name][row, column], reference[name], rtol=1e-5, atol=1e-6)


def test_the_probe_hook_keeps_its_place_before_a_users_hook(tmp_path):
    """A user's hook registered after the probe changes the output: with every=3 the probe must still
    see what it sees with every=1 (its hook runs first), so it is never moved behind the user's."""
    maxima = {}
    for every in (1, 3):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        with actprobe.Probe(model, tmp_path / f"e{every}.h5", every=every) as probe:
            model[1].register_forward_hook(lambda module, args, output: output * 100)
            for k in range(7):
                model(torch.randn(8, 4, generator=torch.Generator().manual_seed(k))).sum().backward()
                probe.step()
        run = actprobe.read(tmp_path / f"e{every}.h5")
        maxima[every] = {int(s): float(run.stats["max"][r, 1]) for r, s in enumerate(run.step)}
    assert maxima[3] == {s: maxima[1][s] for s in (0, 3, 6)}


def test_rows_read_are_the_callers_to_change(tmp_path):
    one_recorded_step(tmp_path / "r.h5", nn.Sequential(nn.Linear(4, 4)))
    run = actprobe.read(tmp_path / "r.h5")
    row = run.stats["mean"][0]
    want = row.copy()
    row[:] = 123.0
    np.testing.assert_array_equal(run.stats["mean"][0], want)
    stat = run.stats["mean"]
    assert (stat > -1e9).all() and stat.tolist() == np.asarray(stat).tolist() and stat[...].shape == (1, 1)


def hook_entries(model: nn.Module) -> int:
    """Every entry of every hook dictionary of the model's modules, the ``with_kwargs`` ones included."""
    return sum(len(getattr(m, attribute)) for m in model.modules()
               for attribute in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                                 "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs"))


def test_hooks_taken_out_and_put_back_leave_nothing_behind(tmp_path, monkeypatch):
    """Idle steps take the probe's hooks out of the modules' dictionaries and recorded steps put them back
    under the same ids; closing the probe (on an idle step or a recorded one) leaves no entry anywhere,
    and a hook the user adds while the probe's is out keeps working and stays after close."""
    record_path(monkeypatch, "hooks")  # (test_dispatch.py: the other path)
    for closing_step in (4, 6):
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        seen = []
        with actprobe.Probe(model, tmp_path / f"r{closing_step}.h5", every=3) as probe:
            ids = {name: handle.id for name, handle in probe._engine._handles.items()}
            for step in range(closing_step):
                if step == 1:  # the probe's hooks are out now
                    assert len(model[1]._forward_hooks) == 0
                    handle = model[1].register_forward_hook(lambda module, args, output: seen.append(step))
                model(torch.randn(3, 4)).sum().backward()
                probe.step()
            assert {name: handle.id for name, handle in probe._engine._handles.items()} == ids
        assert hook_entries(model) == 1 and len(seen) == closing_step - 1  # only the user's hook is left
        handle.remove()
        assert hook_entries(model) == 0
        assert actprobe.read(tmp_path / f"r{closing_step}.h5").step.tolist() == [0, 3]


@pytest.mark.parametrize("how", ["cleared while in", "replaced while out"])
def test_hooks_come_back_after_the_user_cleared_or_replaced_the_dictionaries(tmp_path, monkeypatch, how):
    """Hooks put back under their ids go into the dictionary they were registered in: one the user cleared
    (``module._forward_hooks.clear()``) or replaced no longer holds them. Recorded steps register them
    again from the next recorded step on (a step whose forward ran after the user had removed them is lost)."""
    record_path(monkeypatch, "hooks")
    from collections import OrderedDict
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    with actprobe.Probe(model, tmp_path / "r.h5", every=2) as probe:
        for step in range(8):
            if how == "cleared while in" and step == 2:
                for module in model.modules():
                    module._forward_hooks.clear()
                    module._forward_pre_hooks.clear()
            if how == "replaced while out" and step == 1:
                for module in model.modules():
                    module._forward_hooks = OrderedDict()
                    module._forward_pre_hooks = OrderedDict()
            model(torch.randn(3, 4)).sum().backward()
            probe.step()
    want = [0, 4, 6] if how == "cleared while in" else [0, 2, 4, 6]  # step 2's forward ran without them
    assert actprobe.read(tmp_path / "r.h5").step.tolist() == want
    assert hooked(model) == 0


@pytest.mark.parametrize("path", ["direct", "hooks"])
def test_after_a_failure_the_hooks_leave_the_model(tmp_path, monkeypatch, path):
    """A probe that stopped recording (here: its kernel failed) puts PyTorch's Module._call_impl back at once, and
    takes its hooks out at the next step, as on any unrecorded step: the rest of the training runs on PyTorch's
    fast call path."""
    direct = record_path(monkeypatch, path)
    swapped = []
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    counts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with actprobe.Probe(model, tmp_path / "e.h5", every=2) as probe:
            for step in range(6):
                if step == 2:
                    monkeypatch.setattr(type(probe._recorder.kernel), "__call__", _broken)
                    monkeypatch.setattr(c_backend, "run_lane", _broken)
                model(torch.randn(3, 4)).sum().backward()
                probe.step()
                counts.append(hooked(model))
                swapped.append(nn.Module.__dict__["_call_impl"] is not dispatch.ORIGINAL_CALL_IMPL)
    assert probe.error is not None and "kernel failed" in str(probe.error)
    # (after step(): the hooks the next step runs with; step 2 failed)
    assert counts == [0, 1 if direct else 4, 0, 0, 0, 0]
    assert swapped == [direct, direct, False, False, False, False]


def _broken(*args, **kwargs):
    raise RuntimeError("kernel failed")
