"""The end of a recorded step in the common case (``Recorder.seal``: a row's step, time and scalars, the
partials written in place into the ring's next row, ``Arena.aim``) records exactly what the general path
records, scalars of every kind included, and a flush in the middle of a step loses nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.engine.probe import Probe
from actprobe.engine.recorder import Recorder
from actprobe.stats.arena import Arena
from conftest import STATS


class Model(nn.Module):
    """Its Tanh is left out of the forward from step ``change`` on: the steps' arrangement of partials changes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.relu, self.middle = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16)
        self.tanh, self.last = nn.Tanh(), nn.Linear(16, 3)
        self.with_tanh = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.middle(self.relu(self.first(x)))
        return self.last(self.tanh(x) if self.with_tanh else x)


def _scalars(step: int, loss: torch.Tensor) -> dict:
    """Scalars of every kind: those the common case takes (a CPU tensor, a float, an int) and those it leaves
    to the general path (a bool, a NumPy number, a name first seen late, a value that is not recorded)."""
    values = {"loss": loss, "lr": 0.1 / (step + 1), "epoch": step // 4}
    if step % 3 == 0:
        values["flag"] = step % 2 == 0
    if step % 5 == 1:
        values["np"] = np.float32(step) / 7
    if step >= 6:
        values["late"] = torch.tensor([step * 0.5])
    if step == 4:
        values["bad"] = "not a number"
    return values


def _record(path, *, flush_inside: bool = False, change: int = 99, general: bool = False, **options) -> list[bool]:
    """Twelve training steps; returns, per step, whether it ended in the common case (not by ``Recorder.end_step``,
    the general path). With ``general``, every step takes the general path: ``Probe._step_general`` with a
    ``Recorder.seal`` that declines."""
    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    general_ends: list[int] = []
    real = Recorder.end_step

    def end_step(self, step, *args):
        general_ends.append(step)
        return real(self, step, *args)

    gen = torch.Generator().manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Recorder, "end_step", end_step)
            if general:
                patch.setattr(Probe, "step", Probe._step_general)
                patch.setattr(Recorder, "seal", lambda self, *args: 0)
            with actprobe.Probe(model, path, **options) as probe:
                for step in range(12):
                    model.with_tanh = step < change
                    loss = model(torch.randn(6, 8, generator=gen)).square().mean()
                    if flush_inside and step % 2:  # between the forward and step(): the ring may go to the writer
                        probe.flush(wait=step % 4 == 1)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad()
                    probe.step(**_scalars(step, loss))
    return [step not in general_ends for step in range(12)]


def _contents(path) -> dict:
    run = actprobe.read(path)
    contents = {name: np.asarray(run.stats[name]) for name in STATS}
    contents.update({f"scalar:{name}": np.asarray(values) for name, values in run.scalars.items()})
    contents["step"] = np.asarray(run.step)
    return contents


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("change", [99, 3])
def test_the_common_case_records_what_the_general_path_records(tmp_path, change):
    """``change``: from step 3 on, a site is left out (rows 3 and 4 of the first flush have another arrangement
    than rows 0–2, and the next flush's first row has theirs)."""
    sealed = _record(tmp_path / "sealed.h5", flush_every=5, change=change)
    assert sum(sealed) >= 4, sealed  # the common case did happen
    assert not all(sealed[1:]), "steps with scalars it does not take went the general way"
    assert not any(_record(tmp_path / "general.h5", flush_every=5, change=change, general=True))
    sealed_run, general_run = _contents(tmp_path / "sealed.h5"), _contents(tmp_path / "general.h5")
    _assert_same(sealed_run, general_run)
    assert set(k for k in sealed_run if k.startswith("scalar:")) == {
        "scalar:loss", "scalar:lr", "scalar:epoch", "scalar:flag", "scalar:np", "scalar:late"}
    assert np.isnan(sealed_run["scalar:late"][:6]).all() and sealed_run["scalar:late"][6] == 3.0


@pytest.mark.parametrize("flush_every", [1, 3, 100])
def test_a_flush_within_a_step_loses_nothing(tmp_path, flush_every):
    """A flush between the forward and step() hands the ring's rows to the writer while the step's partials are
    being written into the ring's next row: they move to the arena's own buffer and reach the file."""
    _record(tmp_path / "inside.h5", flush_inside=True, flush_every=flush_every)
    _record(tmp_path / "plain.h5", flush_every=flush_every)
    _assert_same(_contents(tmp_path / "inside.h5"), _contents(tmp_path / "plain.h5"))


def test_an_aimed_arena_writes_in_place_grows_into_its_own_buffer_and_keeps_its_contents():
    arena = Arena(torch.device("cpu"))
    ring_rows = torch.zeros((3, 10), dtype=torch.float64)
    arena.aim(ring_rows, ring_rows.data_ptr() + 8 * 10, 10)  # row 1
    offset = arena.reserve(6)
    arena.buffer[offset:offset + 6] = torch.arange(6.0)
    assert offset == 0 and torch.equal(ring_rows[1, :6], torch.arange(6.0)) and arena.aimed
    offset = arena.reserve(8)  # past the row: on in the arena's own buffer, the first six values along
    arena.buffer[offset:offset + 8] = 7.0
    assert not arena.aimed and arena.used == 14 and arena.size >= 14
    assert torch.equal(arena.row(), torch.cat([torch.arange(6.0), torch.full((8,), 7.0)]).double())
    assert torch.equal(ring_rows[1, 6:], torch.zeros(4, dtype=torch.float64)), "nothing written past the row"
    arena.clear()
    arena.aim(ring_rows, ring_rows.data_ptr(), 10)  # row 0
    arena.reserve(3)
    arena.buffer[:3] = 2.0
    arena.unaim()  # its partials go along
    ring_rows.zero_()
    assert not arena.aimed and torch.equal(arena.row(), torch.full((3,), 2.0, dtype=torch.float64))


def test_an_int_beyond_float64_is_left_out_and_recording_goes_on(tmp_path):
    """``step(n=10**400)``: that value is not recorded (one warning), the row and the rows around it are."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with actprobe.Probe(model, tmp_path / "n.h5") as probe:
            for step in range(8):
                model(torch.randn(3, 4)).sum().backward()
                probe.step(n=10 ** 400 if step in (5, 6) else step)
    messages = [str(w.message) for w in caught]
    assert probe.error is None
    assert sum("step(n=…) is not a number within float64's range" in m for m in messages) == 1, messages
    run = actprobe.read(tmp_path / "n.h5")
    assert run.step.tolist() == list(range(8))
    n = np.asarray(run.scalars["n"])
    assert np.isnan(n[5:7]).all() and n[[0, 1, 2, 3, 4, 7]].tolist() == [0, 1, 2, 3, 4, 7]
