"""A model file's parts turned into what the training loop takes: checked batches, a training step
that names the user's file and line when it fails, and the init check's inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .._text import one_line
from ..errors import ActprobeError, DataError, ModelFileError
from ..training import DEFAULT_LR, TrainStep
from .modelfile import ModelFile, where


def describe(value: Any) -> str:
    """A short description of a value for a message: shape and dtype of tensors, types of the rest."""
    if isinstance(value, torch.Tensor):
        return f"a {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')} tensor"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe(v) for v in value[:3]) + (", ..." if len(value) > 3 else "")
        return f"a {type(value).__name__} of {len(value)} ({inner})"
    return f"a {type(value).__name__}"


def forward(spec: ModelFile, model: nn.Module, inputs: Any, when: str) -> Any:
    """``model(inputs)``; a failure becomes one ``ModelFileError`` naming the file and line."""
    try:
        return model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    except ActprobeError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{where(spec.path, exc)}the model's forward failed {when} on inputs "
                             f"{describe(inputs)}: {one_line(exc, with_type=True)}") from None


class ModelFileStep(TrainStep):
    """The training step of a model file: its ``loss_fn`` and ``optimizer(params)``, or the defaults."""

    def __init__(self, spec: ModelFile, model: nn.Module) -> None:
        super().__init__(model, _optimizer(spec, model), spec.loss_fn)
        self.spec = spec
        self.index = 0

    def __call__(self, batch: tuple[Any, Any]) -> Any:
        output = super().__call__(batch)
        self.index += 1
        return output

    def forward(self, inputs: Any) -> Any:
        return forward(self.spec, self.model, inputs, f"at step {self.index}")

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        if self.spec.loss_fn:
            loss = self.spec.call("loss_fn(outputs, targets)", self.loss_fn, outputs, targets)
        else:
            loss = _default_loss(self.spec, outputs, targets, self.index)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ModelFileError(f"{self.spec.path}: loss_fn must return a one-element tensor, got {describe(loss)}")
        return loss

    def backward(self, loss: torch.Tensor) -> None:
        self.spec.call("loss.backward()", loss.backward)


def _optimizer(spec: ModelFile, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer is None:
        return torch.optim.Adam(model.parameters(), lr=DEFAULT_LR)
    optimizer = spec.call("optimizer(params)", spec.optimizer, model.parameters())
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ModelFileError(f"{spec.path}: optimizer(params) must return a torch.optim.Optimizer, "
                             f"got {type(optimizer).__name__}")
    return optimizer


def _default_loss(spec: ModelFile, outputs: Any, targets: torch.Tensor, step: int) -> torch.Tensor:
    try:
        return nn.functional.cross_entropy(outputs, targets)
    except Exception as exc:
        raise DataError(f"{spec.path}: the default loss (cross-entropy) failed at step {step} on outputs "
                        f"{describe(outputs)} and targets {describe(targets)}: {one_line(exc)}; define "
                        "loss_fn(outputs, targets) if your model needs another loss") from None


class DataBatches:
    """The batches of ``data()`` for each epoch, checked and moved to ``device``.

    A one-shot iterator is asked for again (``data()``) at each new epoch; an epoch without batches
    and any failure of the user's iterator are ``DataError``s.
    """

    def __init__(self, spec: ModelFile, device: torch.device) -> None:
        self.spec, self.device = spec, device
        self.data = spec.call("data()", spec.data)
        if not isinstance(self.data, Iterable):
            raise DataError(f"{spec.path}: data() must return an iterable of (inputs, targets) batches, "
                            f"got {type(self.data).__name__}")
        self.source = getattr(self.data, "source", None) or f"data() of {spec.path.name} ({type(self.data).__name__})"
        self.notes = tuple(getattr(self.data, "notes", ()))
        self.produced = 0

    def __len__(self) -> int:
        return len(self.data)  # TypeError for an iterable without a length

    def __call__(self, epoch: int) -> Iterator[tuple[Any, torch.Tensor]]:
        if epoch > 0 and iter(self.data) is self.data:  # a one-shot iterator: ask data() for the next epoch
            self.data = self.spec.call("data()", self.spec.data)
        empty = True
        for batch in self._guarded(self.data):
            empty = False
            yield self._to_device(batch, self.produced)
            self.produced += 1
        if empty:
            raise DataError(f"{self.spec.path}: data() yielded no batches" + (f" in epoch {epoch + 1}" if epoch else ""))

    def _guarded(self, data: Iterable[Any]) -> Iterator[Any]:
        iterator = iter(data)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except ActprobeError:
                raise
            except Exception as exc:
                raise DataError(f"{where(self.spec.path, exc)}data() failed at batch {self.produced}: "
                                f"{one_line(exc, with_type=True)}") from None
            yield batch

    def _to_device(self, batch: Any, index: int) -> tuple[Any, torch.Tensor]:
        path = self.spec.path
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise DataError(f"{path}: data() must yield (inputs, targets) pairs; batch {index} is {describe(batch)}")
        inputs, targets = batch
        tensors = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
        if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors) or not isinstance(targets, torch.Tensor):
            raise DataError(f"{path}: data() must yield (inputs, targets) with tensors; batch {index} "
                            f"has inputs {describe(inputs)} and targets {describe(targets)}")
        if tensors[0].dim() == 0 or targets.dim() == 0 or tensors[0].shape[0] != targets.shape[0]:
            raise DataError(f"{path}: batch {index} of data(): inputs {describe(tensors[0])} and "
                            f"targets {describe(targets)} must have the same (non-zero) batch dimension")
        moved = tuple(t.to(self.device, non_blocking=True) for t in tensors)
        return (moved if isinstance(inputs, (tuple, list)) else moved[0]), targets.to(self.device, non_blocking=True)
