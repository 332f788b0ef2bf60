"""``Probe.step`` in C (``ProbeCore.step``, ``stats/_cstate.c``): the steps it ends itself record what the
Python step records, bit for bit; it hands every other step to ``Probe._step_general``; a failure inside it stops
recording and never training; without the C extension the probe is the Python one and records the same rows."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import actprobe
from actprobe.engine.probe import Probe
from actprobe.engine.recorder import Recorder
from actprobe.errors import ActprobeWarning
from actprobe.stats import cores
from actprobe.stats.arena import Arena
from conftest import STATS, paper_cnn, train_steps

pytestmark = pytest.mark.skipif(cores.ProbeCore.__module__ == "actprobe.stats.cores",
                                reason="the C extension was not built")


def _record(path: Path, steps: int, *, python: bool = False, **options) -> list[int]:
    """``steps`` training steps of the paper's CNN; returns the steps that ended in Python, Probe._step_general or
    Probe._step_declined (all of them with ``python``: the Python step, with a Recorder.seal that declines, as
    without the C extension)."""
    torch.manual_seed(0)
    model = paper_cnn()
    general: list[int] = []

    def counted(method):
        def step(self, /, **scalars):
            general.append(self._step)
            method(self, **scalars)
        return step

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Probe, "_step_declined", counted(Probe._step_declined))
        patch.setattr(Probe, "_step_general", counted(Probe._step_general))
        if python:
            patch.setattr(Probe, "step", Probe._step_general)
            patch.setattr(Recorder, "seal", lambda self, *args: 0)
        with actprobe.Probe(model, path, **options) as probe:
            for step in range(steps):
                train_steps(model, 1, probe=None, seed=step, batch=16)
                probe.step(loss=torch.tensor(0.5 + step), lr=0.1 / (step + 1), epoch=step // 5)
    return general


def _contents(path: Path) -> dict[str, np.ndarray]:
    run = actprobe.read(path)
    contents = {name: np.asarray(run.stats[name]) for name in STATS}
    contents.update({f"scalar:{name}": np.asarray(values) for name, values in run.scalars.items()})
    contents["step"] = np.asarray(run.step)
    return contents


@pytest.mark.parametrize("options, in_c", [
    ({"every": 1}, lambda step: step >= 1),  # step 0 finds the sites and ends in Python
    ({"every": 3}, lambda step: step % 3 == 1),  # unrecorded, and so is the next: nothing changes but the time
    ({"every": 1, "hist_every": 2}, lambda step: False),  # histograms are the general path's
    ({"every": 1, "flush_every": 3}, lambda step: step >= 1),
])
def test_steps_in_c_record_what_the_python_step_records(tmp_path, options, in_c):
    general = _record(tmp_path / "c.h5", 14, **options)
    assert [step for step in range(14) if step not in general] == [step for step in range(14) if in_c(step)]
    assert _record(tmp_path / "python.h5", 14, python=True, **options) == list(range(14))
    c, python = _contents(tmp_path / "c.h5"), _contents(tmp_path / "python.h5")
    assert c.keys() == python.keys() and len(c["step"]) == len(range(0, 14, options["every"]))
    for name in c:
        np.testing.assert_array_equal(c[name], python[name], err_msg=name)


def test_the_ring_compares_the_steps_own_pairs(tmp_path):
    """The ring's key is made of the pairs the lanes write again at every step (a lane starts with the pair it was
    made from): the end of a step compares them by identity, never item by item."""
    torch.manual_seed(0)
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "k.h5") as probe:
        train_steps(model, 4, probe=probe)
        recorder = probe._recorder  # the test's instrument: the recorder's state after a steady step
        lanes = {id(lane[-1][0]) for lane in recorder._lane_table.values()}
        assert len(lanes) == len(probe.sites) == 11
        assert {id(pair) for pair in recorder._ring.key} == lanes


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_an_error_in_the_step_in_c_stops_recording_not_training(tmp_path, monkeypatch, error):
    """Arena.unaim fails when the ring fills (at its fourth row with flush_every=4): an Exception stops recording
    with a warning, the rows committed before stay, the training goes on; a KeyboardInterrupt goes through."""
    torch.manual_seed(0)
    model = paper_cnn()
    real, failed = Arena.unaim, []

    def unaim(self):
        if probe._step >= 6 and not failed:
            failed.append(probe._step)
            raise error("no room")
        real(self)

    monkeypatch.setattr(Arena, "unaim", unaim)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe = actprobe.Probe(model, tmp_path / "e.h5", flush_every=4)
        with probe:
            if error is KeyboardInterrupt:
                with pytest.raises(KeyboardInterrupt):
                    train_steps(model, 12, probe=probe)
                return
            losses = train_steps(model, 12, probe=probe)
    assert len(losses) == 12 and all(torch.isfinite(loss) for loss in losses)
    assert isinstance(probe.error, OSError) and str(probe.error) == "no room"
    assert failed == [7]  # the ring's fourth row since the flush after step 3
    assert [str(w.message).split(":")[0] for w in caught if issubclass(w.category, ActprobeWarning)] == [
        f"actprobe stopped recording to {tmp_path / 'e.h5'}"]
    assert actprobe.read(tmp_path / "e.h5").step.tolist() == [0, 1, 2, 3]


_WITHOUT_C = """
import sys
sys.modules["actprobe.stats._cstats"] = None  # as if it had not been built
import torch
import actprobe
from actprobe.engine.probe import Probe
from actprobe.stats import c_backend, cores
sys.path.insert(0, {tests!r})
from conftest import paper_cnn, train_steps
assert not c_backend.available() and Probe.step is cores.ProbeCore.step and cores.ArenaCore.__bases__ == (object,)
torch.manual_seed(0)
model = paper_cnn()
with actprobe.Probe(model, {path!r}, every=2, flush_every=3) as probe:
    train_steps(model, 9, probe=probe)
print(probe.error, probe.kernels)
"""


def test_without_the_c_extension_the_probe_records_what_the_torch_kernel_records(tmp_path):
    """The classes whose bases are C types with the extension (``stats.cores``) work on plain classes without
    it: a run in a process that cannot import it equals, bit for bit, a run here with the torch kernel."""
    script = _WITHOUT_C.format(tests=str(Path(__file__).resolve().parents[1]), path=str(tmp_path / "plain.h5"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=os.environ)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["None", "('torch',)"]
    torch.manual_seed(0)
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "torch.h5", every=2, flush_every=3, kernel="torch") as probe:
        train_steps(model, 9, probe=probe)
    plain, here = _contents(tmp_path / "plain.h5"), _contents(tmp_path / "torch.h5")
    assert plain.keys() == here.keys() and plain["step"].tolist() == [0, 2, 4, 6, 8]
    for name in plain:
        np.testing.assert_array_equal(plain[name], here[name], err_msg=name)


class _ItemMode(TorchFunctionMode):
    """Counts Tensor.item calls; raises ``error`` at the first one when given."""

    def __init__(self, error: type[BaseException] | None = None) -> None:
        super().__init__()
        self.items, self.error = 0, error

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.item:
            self.items += 1
            if self.error is not None:
                error, self.error = self.error, None
                raise error("from the mode")
        return func(*args, **(kwargs or {}))


def _steps_with(probe: actprobe.Probe, model: nn.Module, steps: range, mode: _ItemMode | None = None) -> None:
    for step in steps:
        train_steps(model, 1, probe=None, seed=step, batch=8)
        if mode is None:
            probe.step(loss=torch.tensor(float(step)))
        else:
            with mode:
                probe.step(loss=torch.tensor(float(step)))


def test_a_keyboard_interrupt_while_a_scalar_is_read_goes_through(tmp_path):
    """Reading a tensor scalar may run Python code (a TorchFunctionMode): a KeyboardInterrupt raised there reaches
    the training loop; the step is not counted, and the next one records as usual."""
    torch.manual_seed(0)
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "i.h5") as probe:
        _steps_with(probe, model, range(3))
        with pytest.raises(KeyboardInterrupt):
            _steps_with(probe, model, range(3, 4), _ItemMode(KeyboardInterrupt))
        assert probe.step_index == 3 and probe.error is None
        _steps_with(probe, model, range(3, 6))
    run = actprobe.read(tmp_path / "i.h5")
    assert run.step.tolist() == list(range(6)) and np.asarray(run.scalars["loss"]).tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("options, extra, reads", [
    ({}, lambda step: {}, [1] * 6),  # in C from step 1 on
    ({"params": True}, lambda step: {}, [1] * 6),  # parameter partials: seal declines before reading any scalar
    ({}, lambda step: {"flag": True}, [1] * 6),  # a bool is the general path's: declined before any tensor is read
    # a tensor of two values under a name with a column: C reads the loss, then fails to read it (item() raises)
    # and hands the step on to the general path, which reads the loss once more (and leaves the pair out, with a
    # warning)
    ({}, lambda step: {"pair": torch.zeros(1 if step == 0 else 2)}, [2] + [3] * 5),
])
def test_a_tensor_scalar_is_read_once_a_step_unless_the_step_in_c_fails_to_read_one(tmp_path, options, extra, reads):
    torch.manual_seed(0)
    model = paper_cnn()
    if options.get("params"):
        options = {**options, "optimizer": torch.optim.SGD(model.parameters(), lr=0.01)}
    counts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with actprobe.Probe(model, tmp_path / "r.h5", **options) as probe:
            for step in range(6):
                train_steps(model, 1, probe=None, seed=step, batch=8)
                with _ItemMode() as mode:
                    probe.step(loss=torch.tensor(float(step)), **extra(step))
                counts.append(mode.items)
    assert counts == reads
    assert np.asarray(actprobe.read(tmp_path / "r.h5").scalars["loss"]).tolist() == [0, 1, 2, 3, 4, 5]


def test_the_step_in_c_reads_the_clock_python_reads(tmp_path, monkeypatch):
    """A stand-in for time.perf_counter (a test's, freezegun's) is the clock of every row's time."""
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + 1000.0)
    torch.manual_seed(0)
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "t.h5") as probe:
        _steps_with(probe, model, range(6))
    times = np.asarray(actprobe.read(tmp_path / "t.h5").time)
    assert (times >= 0).all() and (times < 100).all() and (np.diff(times) > 0).all(), times


def test_warnings_name_the_line_that_called_step(tmp_path, monkeypatch):
    """The warning that recording stopped (raised in the C step) and the one for a step after close (the Python
    step) both point at the caller's line."""
    torch.manual_seed(0)
    model = paper_cnn()
    monkeypatch.setattr(Arena, "unaim", lambda self: (_ for _ in ()).throw(OSError("no room")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with actprobe.Probe(model, tmp_path / "w.h5", flush_every=2) as probe:
            for step in range(4):
                train_steps(model, 1, probe=None, seed=step, batch=8)
                line = sys._getframe().f_lineno + 1
                probe.step()
            assert isinstance(probe.error, OSError)
        after = sys._getframe().f_lineno + 1
        probe.step()
    places = [(Path(w.filename).name, w.lineno, str(w.message)[:30]) for w in caught
              if issubclass(w.category, ActprobeWarning)]
    assert places == [(Path(__file__).name, line, "actprobe stopped recording to "),
                      (Path(__file__).name, after, "Probe.step() called after the ")], places


def test_a_scalar_may_be_named_self_and_probes_copy(tmp_path):
    torch.manual_seed(0)
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "s.h5", every=2) as probe:
        for step in range(4):
            train_steps(model, 1, probe=None, seed=step, batch=8)
            probe.step(**{"self": float(step)})
        twin = copy.copy(probe)
        assert twin._recorder is probe._recorder and twin.step_index == 4 and twin.file == probe.file
    assert np.asarray(actprobe.read(tmp_path / "s.h5").scalars["self"]).tolist() == [0.0, 2.0]
    arena = copy.deepcopy(probe._recorder._arena)
    assert (arena.used, arena.size, arena.on_cpu) == (probe._recorder._arena.used, probe._recorder._arena.size, True)
    assert arena._own is not probe._recorder._arena._own


def test_close_closes_the_file_after_a_failed_flush(tmp_path, monkeypatch):
    """A flush that fails at close stops recording with a warning, and the writer still closes the file: the same
    path can be written again in this process."""
    torch.manual_seed(0)
    model = paper_cnn()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = actprobe.Probe(model, tmp_path / "c.h5", flush_every=2)
        _steps_with(probe, model, range(5))
        monkeypatch.setattr(Probe, "_flush", lambda self: (_ for _ in ()).throw(OSError("disk gone")))
        probe.close()
    assert isinstance(probe.error, OSError) and not probe._sink.writer._thread.is_alive()
    monkeypatch.undo()
    assert actprobe.read(tmp_path / "c.h5").step.tolist() == [0, 1, 2, 3]
    with actprobe.Probe(model, tmp_path / "c.h5", overwrite=True) as again:
        _steps_with(again, model, range(2))
    assert actprobe.read(tmp_path / "c.h5").step.tolist() == [0, 1]


class _FlushingMode(TorchFunctionMode):
    """Flushes the probe whenever a tensor's value is read (Python code running inside the read)."""

    def __init__(self, probe: actprobe.Probe) -> None:
        super().__init__()
        self.probe = probe

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.item:
            self.probe.flush()
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("python", [False, True])
def test_a_flush_while_a_scalar_is_read_keeps_every_row_in_place(tmp_path, monkeypatch, python):
    """In C, and in the Python step (the general path), the values are read before the row is taken: a flush that
    runs inside the read (from step 3 on) moves nothing."""
    if python:
        monkeypatch.setattr(Probe, "step", Probe._step_general)
        monkeypatch.setattr(Recorder, "seal", lambda self, *args: 0)
    torch.manual_seed(0)
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "f.h5") as probe:
        for step in range(8):
            train_steps(model, 1, probe=None, seed=step, batch=8)
            if step < 3:
                probe.step(loss=torch.tensor(float(step)))
                continue
            with _FlushingMode(probe):
                probe.step(loss=torch.tensor(float(step)))
    run = actprobe.read(tmp_path / "f.h5")
    assert run.step.tolist() == list(range(8)) and np.asarray(run.scalars["loss"]).tolist() == list(range(8))
    assert np.isfinite(np.asarray(run.stats["mean"])).all()
