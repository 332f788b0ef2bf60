"""``Probe.step`` in C (``ProbeCore.step``, ``stats/_cstate.c``): the steps it ends itself record what the
Python step records, bit for bit; it hands every other step to ``Probe._step_general``; a failure inside it stops
recording and never training; without the C extension the probe is the Python one and records the same rows."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

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
    """``steps`` training steps of the paper's CNN; returns the steps that Probe._step_general ended (all of them
    with ``python``: the Python step, with a Recorder.seal that declines, as without the C extension)."""
    torch.manual_seed(0)
    model = paper_cnn()
    general: list[int] = []
    real = Probe._step_general

    def counted(self, **scalars):
        general.append(self._step)
        real(self, **scalars)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Probe, "_step_general", counted)
        if python:
            patch.setattr(Probe, "step", counted)
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
