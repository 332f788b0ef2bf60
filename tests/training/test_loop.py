"""The one training loop: step and epoch counting, callbacks, the probe, interruption, and that a
TrainStep computes exactly what a hand-written step does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import actprobe
from actprobe.errors import DataError
from actprobe.training import StepOutput, TrainStep, run_loop


def _linear(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def test_train_step_matches_a_hand_written_step():
    data = _batches(5)
    model, optimizer = _linear()
    step = TrainStep(model, optimizer)
    losses = [step(batch).loss for batch in data]
    reference, reference_optimizer = _linear()
    expected = []
    for x, y in data:
        loss = nn.functional.cross_entropy(reference(x), y)
        loss.backward()
        reference_optimizer.step()
        reference_optimizer.zero_grad()
        expected.append(loss.detach())
    assert torch.equal(torch.stack(losses), torch.stack(expected))
    for got, want in zip(model.parameters(), reference.parameters()):
        assert torch.equal(got, want)
    assert all(p.grad is None for p in model.parameters())


def test_steps_stop_mid_epoch_and_epochs_end_with_a_callback():
    data = _batches(4)
    seen_steps, epoch_ends = [], []
    result = run_loop(lambda batch: StepOutput(None), lambda epoch: data, steps=10, epochs=None,
                      on_step=lambda done, output: seen_steps.append(done),
                      on_epoch_end=lambda epoch, done: epoch_ends.append((epoch, done)))
    assert result.steps == 10 and result.epochs == 3 and not result.interrupted and result.error is None
    assert seen_steps == list(range(1, 11))
    assert epoch_ends == [(0, 4), (1, 8), (2, 10)]  # the last epoch stopped after 2 of its 4 batches


def test_epochs_limit_and_an_epoch_that_ends_exactly_at_the_step_limit():
    data = _batches(3)
    epoch_ends = []
    result = run_loop(lambda batch: None, lambda epoch: data, steps=6, epochs=5,
                      on_epoch_end=lambda epoch, done: epoch_ends.append(epoch))
    assert result.steps == 6 and epoch_ends == [0, 1]  # no third epoch is started
    result = run_loop(lambda batch: None, lambda epoch: data, epochs=2)
    assert result.steps == 6 and result.epochs == 2


def test_the_probe_is_stepped_with_the_loss_and_records_every_step(tmp_path):
    model, optimizer = _linear()
    path = tmp_path / "run.h5"
    with actprobe.Probe(model, path) as probe:
        result = run_loop(TrainStep(model, optimizer), lambda epoch: _batches(7), probe=probe, epochs=1)
    run = actprobe.read(path)
    assert result.steps == 7 and run.rows == 7 and list(run.step) == list(range(7))
    assert run.scalars["loss"].shape == (7,) and (run.scalars["loss"] > 0).all()


class _Progress:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, label, total):
        self.events.append(("start", label, total))

    def update(self, step, loss):
        self.events.append(("update", step))

    def stop(self):
        self.events.append(("stop",))


def test_progress_and_interruption():
    progress = _Progress()

    def step(batch):
        if batch == 3:
            raise KeyboardInterrupt
        return None

    result = run_loop(step, lambda epoch: range(10), progress=progress, label="x", interruptible=True)
    assert result.interrupted and result.steps == 3
    assert progress.events == [("start", "x", None), ("update", 1), ("update", 2), ("update", 3), ("stop",)]
    with pytest.raises(KeyboardInterrupt):
        run_loop(step, lambda epoch: range(10))


def test_an_actprobe_error_is_returned_when_interruptible_else_raised():
    def step(batch):
        raise DataError("bad batch")

    result = run_loop(step, lambda epoch: range(3), interruptible=True)
    assert isinstance(result.error, DataError) and result.steps == 0
    with pytest.raises(DataError, match="bad batch"):
        run_loop(step, lambda epoch: range(3))


def test_an_empty_epoch_is_a_data_error_not_an_endless_loop():
    used_up = iter(range(3))  # a one-shot iterator handed out again for the second epoch
    with pytest.raises(DataError, match="epoch 2 are empty; an iterator is used up after one epoch"):
        run_loop(lambda batch: None, lambda epoch: used_up, steps=10, epochs=None)
    with pytest.raises(DataError, match="the batches of epoch 1 are empty"):
        run_loop(lambda batch: None, lambda epoch: [], epochs=3)


def test_a_step_output_is_freed_before_the_next_step():
    import gc
    import weakref

    alive = []

    def step(batch):
        gc.collect()
        alive.append(sum(1 for ref in refs if ref() is not None))
        outputs = torch.zeros(4)
        refs.append(weakref.ref(outputs))
        return StepOutput(None, outputs)

    refs: list = []
    run_loop(step, lambda epoch: range(4), epochs=1)
    assert alive == [0, 0, 0, 0]
