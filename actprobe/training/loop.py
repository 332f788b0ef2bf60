"""One training loop for every caller: steps, epochs, a probe, progress and callbacks.

The loop reads no device value: the loss goes to the probe and to the progress display as a
tensor, and the display decides when (rarely) to look at it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import ActprobeError, DataError

DEFAULT_LR = 1e-3  # Adam's learning rate when the user names no optimizer


class Progress(Protocol):
    """Receives progress; ``loss`` is a device tensor (reading it syncs: do it rarely)."""

    def start(self, label: str, total: int | None) -> None: ...
    def update(self, step: int, loss: torch.Tensor | None) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class StepOutput:
    """What one step produced, detached: the loss (None for a forward-only pass) and the outputs."""

    loss: torch.Tensor | None
    outputs: Any = None
    targets: torch.Tensor | None = None


@dataclass(frozen=True)
class LoopResult:
    """How the loop ended. ``error`` is an ``ActprobeError`` raised by a step after the loop began."""

    steps: int
    epochs: int
    seconds: float
    interrupted: bool = False
    error: ActprobeError | None = None


class TrainStep:
    """One optimisation step: forward, loss, backward, optimizer step, gradients cleared.

    Subclasses override ``forward``, ``loss`` or ``backward`` to check or wrap the user's code.

    Args:
        model: the model to train.
        optimizer: its optimizer.
        loss_fn: ``loss_fn(outputs, targets)`` → a one-element tensor (default: cross-entropy).
        autocast: a dtype (``torch.bfloat16``) to run forward and loss under ``torch.autocast``.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[[Any, Any], torch.Tensor] | None = None, *,
                 autocast: torch.dtype | None = None) -> None:
        self.model, self.optimizer = model, optimizer
        self.loss_fn = loss_fn or nn.functional.cross_entropy
        self.autocast = autocast

    def forward(self, inputs: Any) -> Any:
        return self.model(*inputs) if isinstance(inputs, tuple) else self.model(inputs)

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        return self.loss_fn(outputs, targets)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def __call__(self, batch: tuple[Any, Any]) -> StepOutput:
        inputs, targets = batch
        if self.autocast is None:
            outputs = self.forward(inputs)
            loss = self.loss(outputs, targets)
        else:
            with torch.autocast(_device_type(self.model), dtype=self.autocast):
                outputs = self.forward(inputs)
                loss = self.loss(outputs, targets)
        self.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutput(loss.detach(), _detached(outputs), targets)


def run_loop(step: Callable[[Any], StepOutput | None], batches: Callable[[int], Iterable[Any]], *,
             probe: Any = None, steps: int | None = None, epochs: int | None = 1,
             progress: Progress | None = None, label: str = "training", total: int | None = None,
             on_step: Callable[[int, StepOutput | None], None] | None = None,
             on_epoch_end: Callable[[int, int], None] | None = None,
             interruptible: bool = False) -> LoopResult:
    """Run ``step`` on every batch of ``batches(epoch)`` for ``epochs`` epochs or ``steps`` steps.

    After each step: ``probe.step(loss=…)`` (plain ``probe.step()`` for a step without loss), then
    ``progress.update(done, loss)`` and ``on_step(done, output)``; after each epoch that ran at least
    one step, ``on_epoch_end(epoch, done)``. ``steps`` stops mid-epoch; with ``steps`` and
    ``epochs=None`` the epochs go on until ``steps`` is reached. An epoch without batches is a
    ``DataError`` (a one-shot iterator returned again for a second epoch, say), never an endless loop.

    Args:
        interruptible: Ctrl-C and an ``ActprobeError`` raised by a step end the loop and come back in
            the result (the caller reports them); otherwise they propagate.
    """
    limit = math.inf if steps is None else steps
    max_epochs = math.inf if epochs is None else epochs
    counter = _Counter(step, probe, progress, on_step, limit)
    epoch, interrupted, error = 0, False, None
    started = time.perf_counter()
    if progress is not None:
        progress.start(label, total if total is not None else steps)
    try:
        while epoch < max_epochs and counter.done < limit:
            if not counter.run_epoch(batches(epoch)):
                raise DataError(f"the batches of epoch {epoch + 1} are empty" + (
                    "; an iterator is used up after one epoch: pass a function that makes a new one"
                    if epoch else ""))
            if on_epoch_end is not None:
                on_epoch_end(epoch, counter.done)
            epoch += 1
    except KeyboardInterrupt:
        if not interruptible:
            raise
        interrupted = True
    except ActprobeError as exc:
        if not interruptible:
            raise
        error = exc
    finally:
        if progress is not None:
            progress.stop()
    return LoopResult(counter.done, epoch, time.perf_counter() - started, interrupted, error)


class _Counter:
    """The loop's inner part: one epoch of steps, each followed by the probe, progress and ``on_step``."""

    def __init__(self, step: Callable[[Any], StepOutput | None], probe: Any, progress: Progress | None,
                 on_step: Callable[[int, StepOutput | None], None] | None, limit: float) -> None:
        self.step, self.probe, self.progress, self.on_step, self.limit = step, probe, progress, on_step, limit
        self.done = 0

    def run_epoch(self, batches: Iterable[Any]) -> bool:
        """Run the steps of one epoch (up to the limit); whether at least one ran."""
        ran = False
        for batch in batches:
            self._one(batch)
            ran = True
            if self.done >= self.limit:
                break
        return ran

    def _one(self, batch: Any) -> None:
        # its own function, so that the step's outputs are freed before the next step starts
        output = self.step(batch)
        loss = None if output is None else output.loss
        if self.probe is not None:
            self.probe.step() if loss is None else self.probe.step(loss=loss)
        self.done += 1
        if self.progress is not None:
            self.progress.update(self.done, loss)
        if self.on_step is not None:
            self.on_step(self.done, output)


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over ``batches``, in eval mode without gradients."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.no_grad():
        for inputs, targets in batches:
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            outputs = model(inputs)
            loss_sum += nn.functional.cross_entropy(outputs, targets, reduction="sum")
            correct += (outputs.argmax(1) == targets).sum()
            seen += len(targets)
    model.train(was_training)
    return float(loss_sum) / seen, float(correct) / seen


def _detached(outputs: Any) -> Any:
    return outputs.detach() if isinstance(outputs, torch.Tensor) else outputs


def _device_type(model: nn.Module) -> str:
    parameter = next(model.parameters(), None)
    return "cpu" if parameter is None else parameter.device.type
