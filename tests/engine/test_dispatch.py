"""Modules recorded directly (engine/dispatch.py): while a probe records a step, ``nn.Module._call_impl`` is a C
function that calls a registered module's forward and then the probe's hook, without PyTorch's hook path. Every run here is compared, bit for bit, with the same run recorded through PyTorch's
hooks, and the model is checked to hold nothing of the probe."""

from __future__ import annotations

import copy
import pickle
import threading

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.engine import dispatch
from conftest import paper_cnn, record_path, reference_statistics

pytestmark = pytest.mark.skipif(dispatch.DISPATCH is None, reason="built without the C extension's direct calls")


def swapped() -> bool:
    return nn.Module.__dict__["_call_impl"] is not dispatch.ORIGINAL_CALL_IMPL


def assert_same_files(a, b) -> None:
    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:
        assert list(x["sites"].asstr()[()]) == list(y["sites"].asstr()[()])
        np.testing.assert_array_equal(x["step"][()], y["step"][()])
        for name in y["stats"]:
            np.testing.assert_array_equal(x["stats"][name][()], y["stats"][name][()], err_msg=name)
        for name in y["scalars"]:
            np.testing.assert_array_equal(x["scalars"][name][()], y["scalars"][name][()], err_msg=name)


class Twice(nn.Module):
    """One module called twice per forward, one called with a keyword, one in eval mode and one under no_grad in
    the middle of the training forward (train_only leaves both out), a tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.act = nn.ReLU()
        self.head = nn.Linear(6, 3)
        self.side = nn.Linear(6, 6)
        self.split = Split()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc(x))
        h = self.act(self.fc(input=h))
        with torch.no_grad():
            self.side(h)
        a, b = self.split(h)
        return self.head(a + b)


class Split(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x - 1


def _train(model: nn.Module, path, *, steps: int = 7, every: int = 1, during=None, shape=(12, 6)) -> None:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with actprobe.Probe(model, path, every=every) as probe:
        for step in range(steps):
            x = torch.randn(*shape, generator=gen)
            if during is not None:
                during(model, step, probe)
            model(x).float().pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            probe.step(loss=float(step))


@pytest.mark.parametrize("make", [paper_cnn, Twice], ids=["paper CNN", "calls twice, kwargs, no_grad, tuple"])
def test_direct_calls_record_what_the_hooks_record(tmp_path, monkeypatch, make):
    files = {}
    for path in ("direct", "hooks"):
        assert record_path(monkeypatch, path) == (path == "direct")
        torch.manual_seed(0)
        model = make()
        files[path] = tmp_path / f"{path}.h5"
        _train(model, files[path], shape=(12, 1, 28, 28) if make is paper_cnn else (12, 6))
        if path == "direct":
            assert not any(m._forward_hooks for m in model.modules())  # nothing was ever registered on them
    assert_same_files(files["direct"], files["hooks"])
    assert not swapped() and not dispatch.DISPATCH.registry


class Sees(nn.Module):
    """A layer that notes, inside its own call, whether the swapped ``_call_impl`` is in place."""

    def __init__(self, seen: list) -> None:
        super().__init__()
        self.seen = seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(swapped())
        return x * 2


def test_a_probe_that_records_one_step_in_n_holds_the_swap_from_its_first_step_until_it_closes(tmp_path, monkeypatch):
    """nn.Module is changed twice a probe, not at every recorded step (each change makes Python re-specialise the
    code that touches modules; CPython 3.13 allows a class 1,000); on the other steps the modules are called plainly,
    and what is recorded is what the hooks record."""
    files = {}
    for path in ("direct", "hooks"):
        direct = record_path(monkeypatch, path)
        torch.manual_seed(0)
        inside: list[bool] = []
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Sees(inside))
        seen = []
        files[path] = tmp_path / f"{path}.h5"
        with actprobe.Probe(model, files[path], every=3) as probe:
            for step in range(7):
                seen.append((swapped(), len(model[0]._forward_hooks)))
                model(torch.randn(3, 4, generator=torch.Generator().manual_seed(step))).sum().backward()
                probe.step()
        on = [step % 3 == 0 for step in range(7)]
        assert seen == ([(True, 0)] * 7 if direct else [(False, int(s)) for s in on])
        assert inside == [direct] * 7 and not swapped()
        if direct:
            assert dispatch.DISPATCH.changes == 2 and not dispatch.DISPATCH.registry
    assert_same_files(files["direct"], files["hooks"])
    assert actprobe.read(files["direct"]).step.tolist() == [0, 3, 6]


def test_past_the_limit_of_changes_to_nn_module_a_probe_records_through_hooks(tmp_path, monkeypatch):
    record_path(monkeypatch, "direct")
    monkeypatch.setattr(dispatch.DISPATCH, "changes", dispatch.CHANGE_LIMIT)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with actprobe.Probe(model, tmp_path / "hooks.h5") as probe:
        for _ in range(3):
            assert not swapped() and len(model[0]._forward_hooks) == 1
            model(torch.randn(3, 4)).sum().backward()
            probe.step()
    assert dispatch.DISPATCH.changes == dispatch.CHANGE_LIMIT and not dispatch.DISPATCH.registry
    assert actprobe.read(tmp_path / "hooks.h5").rows == 3


@pytest.mark.parametrize("when, every", [(0, 1), (3, 1), (1, 3), (2, 3)],
                         ids=["first step", "fourth step", "an unrecorded step", "the step before a recorded one"])
def test_a_users_hook_added_while_recording_runs_after_the_probes(tmp_path, monkeypatch, when, every):
    """The user's hook changes the output (to zeros); the probe records what it records through its hooks: the
    output before the user's hook (its hook goes back into the module, first). Added on a step the probe does not
    record, the hook runs there (the module is called plainly) and the probe's goes before it from the next
    recorded step on."""
    files, order = {}, {}
    for path in ("direct", "hooks"):
        record_path(monkeypatch, path)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))

        def during(model, step, probe):
            if step == when:
                model[1].register_forward_hook(lambda module, args, output: output * 0)

        files[path] = tmp_path / f"{path}.h5"
        _train(model, files[path], during=during, every=every)
        order[path] = len(model[1]._forward_hooks)
    assert_same_files(files["direct"], files["hooks"])
    assert order == {"direct": 1, "hooks": 1}  # (closed: the probe's hook is gone, the user's stays)
    run = actprobe.read(files["direct"])
    assert (np.asarray(run.stats["max"][:, 1]) > 0).all()  # the ReLU's own outputs, never the user's zeros


@pytest.mark.parametrize("every", [1, 2])
def test_global_hooks_run_first_as_pytorch_runs_them(tmp_path, monkeypatch, every):
    files = {}
    for path in ("direct", "hooks"):
        record_path(monkeypatch, path)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6))
        handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, output: output + 1)
        # a hook of the user's on one layer too, added while the probe records: the probe's goes before it
        mine = lambda model, step, probe: step == 1 and model[1].register_forward_hook(lambda m, a, o: o * 0 + 100)
        try:
            files[path] = tmp_path / f"{path}.h5"
            _train(model, files[path], every=every, during=mine)
        finally:
            handle.remove()
    assert_same_files(files["direct"], files["hooks"])


def test_the_swap_is_in_place_exactly_while_some_probe_records_directly(tmp_path, monkeypatch):
    """Two probes recording every step hold the swap together; it goes when the last is closed."""
    record_path(monkeypatch, "direct")
    a, b = nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    pa, pb = actprobe.Probe(a, tmp_path / "a.h5"), actprobe.Probe(b, tmp_path / "b.h5")
    seen = []
    for step in range(6):
        if step == 2:
            pa.close()
        if step == 4:
            pb.close()
        seen.append((swapped(), dispatch.DISPATCH.holders))
        for model, probe in ((a, pa), (b, pb)):
            model(torch.randn(2, 4)).sum().backward()
            if not probe.closed:
                probe.step()
    assert seen == [(True, 2), (True, 2), (True, 1), (True, 1), (False, 0), (False, 0)]
    assert not swapped() and not dispatch.DISPATCH.registry and dispatch.DISPATCH.holders == 0
    assert actprobe.read(tmp_path / "a.h5").step.tolist() == [0, 1]
    assert actprobe.read(tmp_path / "b.h5").step.tolist() == [0, 1, 2, 3]


def test_copies_made_while_recording_hold_nothing_compute_the_same_and_are_not_recorded(tmp_path, monkeypatch):
    """deepcopy, copy.copy, pickle and DataParallel's replicas of a module, made in a recorded step: their calls
    compute what the module computes (a shallow copy shares its parameters) and are not recorded (not registered)."""
    files = {}
    for with_copies in (True, False):
        record_path(monkeypatch, "direct")
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))

        def during(model, step, probe):
            if not with_copies or step % 2:
                return
            x = torch.randn(5, 6)
            leaf = model[0]  # (a shallow copy of the Sequential would share its children: the same modules)
            replica = leaf._replicate_for_data_parallel()  # as nn.DataParallel makes one: then its parameters
            for name, parameter in leaf.named_parameters():
                setattr(replica, name, parameter)
            for original, twin in ((model, copy.deepcopy(model)), (model, pickle.loads(pickle.dumps(model))),
                                   (leaf, copy.copy(leaf)), (leaf, replica)):
                assert all("forward" not in vars(m) and "_call_impl" not in vars(m) for m in twin.modules())
                with torch.no_grad():
                    assert torch.equal(twin(x), original(x))
                twin(x)  # a training call of the copy (gradients on): not recorded

        files[with_copies] = tmp_path / f"{with_copies}.h5"
        _train(model, files[with_copies], during=during)
    assert_same_files(files[True], files[False])


@pytest.mark.parametrize("every", [1, 2], ids=["the next step recorded", "the next step not recorded"])
def test_a_probe_that_stops_recording_puts_pytorchs_call_impl_back(tmp_path, monkeypatch, every):
    """The run file cannot be written (the disk is full): the probe stops recording with a warning, and the rest of
    the training runs with PyTorch's own Module._call_impl, from the moment the failure is known."""
    import errno
    import warnings

    from actprobe.runfile import storage

    record_path(monkeypatch, "direct")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    monkeypatch.setattr(storage, "_extend", full)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with actprobe.Probe(model, tmp_path / "full.h5", every=every) as probe:
            model(torch.randn(2, 4)).sum().backward()
            probe.step(loss=1.0)
            assert swapped() and probe._engine.attached == (every == 1)
            probe.flush(wait=True)  # the writer fails on step 0's row
            assert probe.error is not None and not swapped()  # while the probe is still open
            for _ in range(3):
                model(torch.randn(2, 4)).sum().backward()
                probe.step(loss=1.0)
                assert not swapped()
    assert "No space left" in str(probe.error)
    assert not swapped() and not dispatch.DISPATCH.registry and dispatch.DISPATCH.holders == 0


def test_an_error_in_forward_reaches_the_caller_unchanged_and_recording_goes_on(tmp_path, monkeypatch):
    record_path(monkeypatch, "direct")

    class Fails(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] == 3:
                raise ValueError("three rows are not allowed")
            return x + 1

    model = nn.Sequential(nn.Linear(4, 4), Fails())
    with actprobe.Probe(model, tmp_path / "e.h5") as probe:
        for step in range(3):
            assert swapped()
            with pytest.raises(ValueError, match="three rows are not allowed"):
                model(torch.randn(3, 4))
            model(torch.randn(2, 4)).sum().backward()
            probe.step()
    assert probe.error is None and actprobe.read(tmp_path / "e.h5").step.tolist() == [0, 1, 2]


def test_a_class_with_its_own_call_path_keeps_the_hook(tmp_path, monkeypatch):
    record_path(monkeypatch, "direct")

    class OwnCall(nn.Linear):
        def __call__(self, *args, **kwargs):
            return super().__call__(*args, **kwargs) * 2

    model = nn.Sequential(OwnCall(4, 4), nn.ReLU())
    x = torch.randn(5, 4)
    with actprobe.Probe(model, tmp_path / "o.h5") as probe:
        assert len(model[0]._forward_hooks) == 1 and len(model[1]._forward_hooks) == 0
        with torch.no_grad():
            want = reference_statistics(nn.functional.linear(x, model[0].weight, model[0].bias), -1)
        model(x).sum().backward()
        probe.step()
    run = actprobe.read(tmp_path / "o.h5")
    np.testing.assert_allclose(float(run.stats["mean"][0, 0]), want["mean"], rtol=1e-5, atol=1e-6)


def test_another_librarys_call_impl_is_left_alone_and_the_hooks_record(tmp_path, monkeypatch):
    """A library that replaced ``nn.Module._call_impl`` itself: the probe does not swap it, records through
    its hooks, and leaves the library's function in place."""
    files = {}
    calls = []

    def theirs(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return dispatch.ORIGINAL_CALL_IMPL(self, *args, **kwargs)

    for path in ("direct", "hooks"):
        record_path(monkeypatch, path)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
        files[path] = tmp_path / f"{path}.h5"
        if path == "direct":
            monkeypatch.setattr(nn.Module, "_call_impl", theirs)
            _train(model, files[path])
            assert nn.Module.__dict__["_call_impl"] is theirs and calls
            monkeypatch.undo()
            record_path(monkeypatch, "hooks")
        else:
            _train(model, files[path])
    assert_same_files(files["direct"], files["hooks"])


def test_other_threads_models_run_unrecorded_while_the_swap_is_in_place(tmp_path, monkeypatch):
    record_path(monkeypatch, "direct")
    other = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    x = torch.randn(3, 4)
    with torch.no_grad():
        want = other(x)
    results = []
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with actprobe.Probe(model, tmp_path / "t.h5") as probe:
        assert swapped()
        worker = threading.Thread(target=lambda: results.extend(other(x) for _ in range(50)))
        worker.start()
        for _ in range(3):
            model(torch.randn(2, 4)).sum().backward()
            probe.step()
        worker.join()
    assert len(results) == 50 and all(torch.equal(r, want) for r in results)
    assert actprobe.read(tmp_path / "t.h5").sites == ["0", "1"]


def test_a_module_freed_while_registered_leaves_no_entry(tmp_path, monkeypatch):
    record_path(monkeypatch, "direct")
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    probe = actprobe.Probe(model, tmp_path / "f.h5")
    keys = set(dispatch.DISPATCH.registry)
    assert {id(m) for m in model} <= keys
    probe.close()
    assert not dispatch.DISPATCH.registry and not swapped()
    probe = actprobe.Probe(model, tmp_path / "g.h5")
    del model  # (the probe holds the model weakly)
    import gc
    gc.collect()
    assert not dispatch.DISPATCH.registry
    probe.close()
    assert not swapped()


@pytest.mark.slow
@pytest.mark.parametrize("reset_after_probe", [False, True])
def test_a_model_compiled_first_in_a_recorded_step_is_compiled_whole_and_recorded(tmp_path, monkeypatch,
                                                                                   reset_after_probe):
    """torch.compile begins while the swap is in place (the probe's first step): the modules move to hooks before
    Dynamo traces (its compile-start callback, or the call of the compiled module when ``torch._dynamo.reset()``
    cleared the callbacks), so the graphs and the rows are those of the hooks' path."""
    from torch._dynamo.utils import counters

    rows, frames = {}, {}
    for path in ("direct", "hooks"):
        torch._dynamo.reset()
        record_path(monkeypatch, path)
        torch.manual_seed(0)
        model = nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(16, 16), nn.ReLU())])
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
        before = dict(counters["frames"])
        with actprobe.Probe(model, tmp_path / f"{path}.h5") as probe:
            if reset_after_probe:
                torch._dynamo.reset()
            compiled = torch.compile(model)
            for _ in range(6):
                compiled(x).sum().backward()
                probe.step()
            frames[path] = {key: counters["frames"][key] - before.get(key, 0) for key in counters["frames"]}
        assert not swapped()
        run = actprobe.read(tmp_path / f"{path}.h5")
        rows[path] = (run.step.tolist(), np.asarray(run.stats["mean"]))
    assert rows["direct"][0] == rows["hooks"][0] == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(rows["direct"][1], rows["hooks"][1], rtol=1e-5, atol=1e-6)
    assert frames["direct"] == frames["hooks"]  # the same frames compiled: no graph broken by the swap


def test_a_probe_never_closed_gives_the_swap_back_when_its_model_is_gone(tmp_path, monkeypatch):
    import gc

    record_path(monkeypatch, "direct")
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    probe = actprobe.Probe(model, tmp_path / "n.h5")
    model(torch.randn(2, 4)).sum().backward()
    probe.step()
    assert swapped()
    del model, probe
    gc.collect()
    assert not swapped() and dispatch.DISPATCH.holders == 0 and not dispatch.DISPATCH.registry


def test_a_probe_that_fails_to_start_leaves_nothing_swapped(tmp_path, monkeypatch):
    record_path(monkeypatch, "direct")

    def broken(*args, **kwargs):
        raise RuntimeError("ParamWatch failed (injected)")

    monkeypatch.setattr("actprobe.engine.probe.ParamWatch", broken)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(RuntimeError, match="injected"):
        actprobe.Probe(model, tmp_path / "f.h5", params=True, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert not swapped() and dispatch.DISPATCH.holders == 0 and not dispatch.DISPATCH.registry
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.slow
@pytest.mark.parametrize("case", ["first compiled on an idle step", "dynamo reset while recording"])
def test_a_function_compiled_later_records_every_recorded_step(tmp_path, monkeypatch, case):
    """A compiled function that calls the model, first run on an idle step (its graph must be made with the hooks
    it will have on recorded steps), or after ``torch._dynamo.reset()`` while a probe records every step (the
    reset clears Dynamo's callbacks; the probe's stays)."""
    torch._dynamo.reset()
    record_path(monkeypatch, "direct")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    every = 2 if case == "first compiled on an idle step" else 1

    def loss_of(x):
        return model(x).pow(2).mean()

    compiled = torch.compile(loss_of)
    with actprobe.Probe(model, tmp_path / "c.h5", every=every) as probe:
        for step in range(6):
            if step == 1 and every == 1:
                torch._dynamo.reset()
            x = torch.randn(3, 4, generator=torch.Generator().manual_seed(step))
            (compiled(x) if step >= 1 else loss_of(x)).backward()
            probe.step()
    assert not swapped()
    run = actprobe.read(tmp_path / "c.h5")
    assert run.step.tolist() == list(range(0, 6, every))
    assert np.isfinite(np.asarray(run.stats["std"])).all(), "every recorded step has every site"


@pytest.mark.parametrize("path", ["direct", "hooks"])
def test_hooks_put_back_as_compile_begins_go_before_a_users_hook(tmp_path, monkeypatch, path):
    """torch.compile begins on an idle step (``use_hooks``, Dynamo's start callback), after the user added a hook
    while the probe's was out: the probe's goes back first, as on a recorded step."""
    record_path(monkeypatch, path)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with actprobe.Probe(model, tmp_path / "u.h5", every=2) as probe:
        model(torch.randn(2, 4)).sum().backward()
        probe.step()  # an idle step next: the probe's hooks are out
        model[1].register_forward_hook(lambda module, args, output: None)
        probe._engine.use_hooks()
        first = next(iter(model[1]._forward_hooks.values()))
        assert first is probe._engine._hooks["1"] and len(model[1]._forward_hooks) == 2


def test_a_probe_opened_directly_closes_cleanly_after_the_path_was_switched(tmp_path, monkeypatch):
    """An engine gives the swap back to the dispatch it registered with, whatever ``hooks.DISPATCH`` says by then
    (``record_path(..., "hooks")`` sets it to None): close() raises nothing, and PyTorch's function is back."""
    record_path(monkeypatch, "direct")
    a = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    pa = actprobe.Probe(a, tmp_path / "a.h5", every=2)
    a(torch.randn(2, 4)).sum().backward()
    pa.step()
    assert swapped() and not pa._engine.attached  # held through the idle step
    record_path(monkeypatch, "hooks")
    b = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with actprobe.Probe(b, tmp_path / "b.h5") as pb:
        b(torch.randn(2, 4)).sum().backward()
        pb.step()
    pa.close()
    assert pa.error is None and not swapped() and dispatch.DISPATCH.holders == 0 and not dispatch.DISPATCH.registry
    assert actprobe.read(tmp_path / "a.h5").rows == 1 and actprobe.read(tmp_path / "b.h5").rows == 1


@pytest.mark.parametrize("how", ["closed", "failed"])
def test_a_compile_after_a_probe_stopped_leaves_its_model_alone(tmp_path, monkeypatch, how):
    """torch.compile beginning (Dynamo's compile-start callback, called here as Dynamo calls it) moves the modules of
    the probes that record to hooks; a probe closed, or stopped by a failure, records no more: its model stays
    without a hook of the probe's (a model saved after close() holds nothing of it)."""
    record_path(monkeypatch, "direct")
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    probe = actprobe.Probe(model, tmp_path / "p.h5", every=2)
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        probe.step()
    if how == "closed":
        probe.close()
    else:
        with pytest.warns(actprobe.ActprobeWarning, match="stopped recording"):
            probe._fail(RuntimeError("injected"))
        assert not swapped()
    dispatch.DISPATCH.compile_starts()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    probe.close()
    assert not swapped() and not dispatch.DISPATCH.registry and dispatch.DISPATCH.holders == 0
