"""Running a model file: training with a probe attached, or an init check on standardised random inputs.

The loop never reads a device value: the loss goes to the probe and to the progress display as a
tensor, and the display decides when (rarely) to look at it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ._text import one_line
from .errors import ActprobeError, DataError, ModelFileError, OptionError
from .modelfile import ModelFile, where
from .probe import Probe

INIT_CHECK_STEPS = 10
DEFAULT_LR = 1e-3


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What ``actprobe run`` was asked for. ``steps`` and ``epochs`` exclude each other; ``out`` is
    chosen by ``run_command.output_path`` when not given."""

    model_file: Path
    out: Path | None = None
    steps: int | None = None
    epochs: int | None = None
    device: str = "auto"
    every: int = 1
    select: tuple[str, ...] = ()
    seed: int = 0
    batch_size: int = 64  # init check only: samples per forward pass
    init_check: bool = False  # an init check even when the file defines data()
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "epochs", "every", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OptionError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.steps is not None and self.epochs is not None:
            raise OptionError("give --steps or --epochs, not both")


@dataclass(frozen=True)
class RunOutcome:
    """What a run did. ``error`` is set when the user's code failed after recording had started."""

    path: Path
    mode: str  # "train" or "init-check"
    steps: int
    seconds: float
    data_source: str
    device: str
    interrupted: bool = False
    error: ActprobeError | None = None


class ProgressSink(Protocol):
    """Receives progress; ``loss`` is a device tensor (reading it syncs: do it rarely)."""

    def start(self, total: int | None, mode: str, source: str, notes: tuple[str, ...]) -> None: ...
    def update(self, step: int, loss: torch.Tensor | None) -> None: ...
    def stop(self) -> None: ...


class _Silent:
    def start(self, total: int | None, mode: str, source: str, notes: tuple[str, ...]) -> None: ...
    def update(self, step: int, loss: torch.Tensor | None) -> None: ...
    def stop(self) -> None: ...


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is an ``OptionError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise OptionError(f"unknown device {name!r}; use auto, cpu or cuda (cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise OptionError(f"unsupported device {name!r}; use auto, cpu or cuda (cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
            raise OptionError(f"--device {name}: CUDA is not available on this machine ({build}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def run_model_file(spec: ModelFile, options: RunOptions, progress: ProgressSink | None = None) -> RunOutcome:
    """Build the model, then train it on ``data()`` or run the init check; the probe records all along.

    Raises:
        OptionError, ModelFileError, DataError, RunFileError: before anything was recorded.
        Failures after recording started come back as ``RunOutcome.error``, the file kept.
    """
    if options.out is None:
        raise OptionError("RunOptions.out must name the run file")
    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    model = spec.call("model()", spec.model)
    if not isinstance(model, nn.Module):
        raise ModelFileError(f"{spec.path}: model() must return a torch.nn.Module, got {type(model).__name__}")
    model.to(device)
    progress = progress or _Silent()
    if spec.data is not None and not options.init_check:
        return _Training(spec, options, model, device).run(progress)
    return _init_check(spec, options, model, device, progress)


class _Training:
    def __init__(self, spec: ModelFile, options: RunOptions, model: nn.Module, device: torch.device) -> None:
        self.spec, self.options, self.model, self.device = spec, options, model, device
        self.data = spec.call("data()", spec.data)
        if not isinstance(self.data, Iterable):
            raise DataError(f"{spec.path}: data() must return an iterable of (inputs, targets) batches, "
                            f"got {type(self.data).__name__}")
        self.source = getattr(self.data, "source", None) or f"data() of {spec.path.name} ({type(self.data).__name__})"
        self.loss_fn = spec.loss_fn or nn.functional.cross_entropy
        self.optimizer = self._optimizer()

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.spec.optimizer is None:
            return torch.optim.Adam(self.model.parameters(), lr=DEFAULT_LR)
        optimizer = self.spec.call("optimizer(params)", self.spec.optimizer, self.model.parameters())
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ModelFileError(f"{self.spec.path}: optimizer(params) must return a torch.optim.Optimizer, "
                                 f"got {type(optimizer).__name__}")
        return optimizer

    def total_steps(self) -> int | None:
        if self.options.steps is not None:
            return self.options.steps
        try:
            return (self.options.epochs or 1) * len(self.data)
        except TypeError:  # an iterable without a length
            return None

    def run(self, progress: ProgressSink) -> RunOutcome:
        self.model.train()
        losses = (self._step(step, inputs, targets) for step, (inputs, targets) in enumerate(self._batches()))
        return _record(self.options, self.model, self.device, "train", self.source, losses, progress,
                       total=self.total_steps(), notes=tuple(getattr(self.data, "notes", ())))

    def _batches(self) -> Iterator[tuple[Any, torch.Tensor]]:
        limit = self.options.steps
        epochs = math.inf if limit is not None else (self.options.epochs or 1)
        produced, epoch, data = 0, 0, self.data
        while epoch < epochs:
            if epoch > 0 and iter(data) is data:  # a one-shot iterator: ask data() for the next epoch
                data = self.spec.call("data()", self.spec.data)
            empty = True
            for batch in self._guarded(data, produced):
                empty = False
                yield self._to_device(batch, produced)
                produced += 1
                if limit is not None and produced >= limit:
                    return
            if empty:
                raise DataError(f"{self.spec.path}: data() yielded no batches" + (f" in epoch {epoch + 1}" if epoch else ""))
            epoch += 1

    def _guarded(self, data: Iterable[Any], produced: int) -> Iterator[Any]:
        iterator = iter(data)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except ActprobeError:
                raise
            except Exception as exc:
                raise DataError(f"{where(self.spec.path, exc)}data() failed at batch {produced}: "
                                f"{one_line(exc, with_type=True)}") from None
            produced += 1
            yield batch

    def _to_device(self, batch: Any, index: int) -> tuple[Any, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise DataError(f"{self.spec.path}: data() must yield (inputs, targets) pairs; batch {index} is "
                            f"{_describe(batch)}")
        inputs, targets = batch
        tensors = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
        if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors) or not isinstance(targets, torch.Tensor):
            raise DataError(f"{self.spec.path}: data() must yield (inputs, targets) with tensors; batch {index} "
                            f"has inputs {_describe(inputs)} and targets {_describe(targets)}")
        if tensors[0].dim() == 0 or targets.dim() == 0 or tensors[0].shape[0] != targets.shape[0]:
            raise DataError(f"{self.spec.path}: batch {index} of data(): inputs {_describe(tensors[0])} and "
                            f"targets {_describe(targets)} must have the same (non-zero) batch dimension")
        moved = tuple(t.to(self.device, non_blocking=True) for t in tensors)
        return (moved if isinstance(inputs, (tuple, list)) else moved[0]), targets.to(self.device, non_blocking=True)

    def _step(self, step: int, inputs: Any, targets: torch.Tensor) -> torch.Tensor:
        outputs = _forward(self.spec, self.model, inputs, f"at step {step}")
        loss = self.spec.call("loss_fn(outputs, targets)", self.loss_fn, outputs, targets) \
            if self.spec.loss_fn else _default_loss(self.spec, outputs, targets, step)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ModelFileError(f"{self.spec.path}: loss_fn must return a one-element tensor, got {_describe(loss)}")
        self.spec.call("loss.backward()", loss.backward)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def _default_loss(spec: ModelFile, outputs: Any, targets: torch.Tensor, step: int) -> torch.Tensor:
    try:
        return nn.functional.cross_entropy(outputs, targets)
    except Exception as exc:
        raise DataError(f"{spec.path}: the default loss (cross-entropy) failed at step {step} on outputs "
                        f"{_describe(outputs)} and targets {_describe(targets)}: {one_line(exc)}; define "
                        "loss_fn(outputs, targets) if your model needs another loss") from None


def _forward(spec: ModelFile, model: nn.Module, inputs: Any, when: str) -> Any:
    try:
        return model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    except ActprobeError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{where(spec.path, exc)}the model's forward failed {when} on inputs "
                             f"{_describe(inputs)}: {one_line(exc, with_type=True)}") from None


def _init_check(spec: ModelFile, options: RunOptions, model: nn.Module, device: torch.device,
                progress: ProgressSink) -> RunOutcome:
    if options.epochs is not None:
        raise OptionError(f"--epochs needs data(); {spec.path} runs an init check (use --steps)")
    if spec.example_input is None and spec.input_shape is None:
        raise ModelFileError(f"{spec.path} defines neither data() nor input_shape or example_input(); "
                             "the init check needs one of them")
    steps = options.steps or INIT_CHECK_STEPS
    generator = torch.Generator().manual_seed(options.seed)

    def passes() -> Iterator[None]:
        for step in range(steps):
            _forward(spec, model, _init_input(spec, options, generator, device), f"at init-check pass {step}")
            yield None

    model.train()  # as at the first training step (dropout on, batch statistics in norm layers)
    return _record(options, model, device, "init-check", _init_source(spec, options, steps), passes(), progress,
                   total=steps, train_only=False, context=torch.no_grad())


def _record(options: RunOptions, model: nn.Module, device: torch.device, mode: str, source: str,
            steps: Iterator[torch.Tensor | None], progress: ProgressSink, *, total: int | None,
            notes: tuple[str, ...] = (), train_only: bool = True,
            context: contextlib.AbstractContextManager[Any] | None = None) -> RunOutcome:
    """Drive ``steps`` (each item: one step done, its loss or None) with a probe attached to ``model``."""
    meta = {"command": "actprobe run", "model_file": str(options.model_file), "mode": mode,
            "data_source": source, "seed": options.seed, "device": str(device)}
    done, interrupted, error = 0, False, None
    start = time.perf_counter()
    with context or contextlib.nullcontext(), Probe(
            model, options.out, select=list(options.select) or None, every=options.every, meta=meta,
            overwrite=options.overwrite, train_only=train_only) as probe:
        progress.start(total, mode, source, notes)
        try:
            for loss in steps:
                probe.step() if loss is None else probe.step(loss=loss)
                done += 1
                progress.update(done, loss)
        except KeyboardInterrupt:
            interrupted = True
        except ActprobeError as exc:
            error = exc
        finally:
            progress.stop()
    return RunOutcome(options.out, mode, done, time.perf_counter() - start, source, str(device), interrupted, error)


def _init_source(spec: ModelFile, options: RunOptions, steps: int) -> str:
    if spec.example_input is not None:
        return f"init check: {steps} forward passes on example_input() of {spec.path.name}, no training"
    shape = ", ".join(str(n) for n in (options.batch_size, *spec.input_shape))
    return (f"init check: {steps} forward passes on standardised random inputs (mean 0, std 1) of shape "
            f"({shape}), no training")


def _init_input(spec: ModelFile, options: RunOptions, generator: torch.Generator, device: torch.device) -> Any:
    if spec.example_input is not None:
        value = spec.call("example_input()", spec.example_input)
        tensors = value if isinstance(value, (tuple, list)) else (value,)
        if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise ModelFileError(f"{spec.path}: example_input() must return a tensor or a tuple of tensors, "
                                 f"got {_describe(value)}")
        moved = tuple(t.to(device) for t in tensors)
        return moved if isinstance(value, (tuple, list)) else moved[0]
    x = torch.randn(options.batch_size, *spec.input_shape, generator=generator, dtype=torch.float64)
    x = (x - x.mean()) / x.std(correction=0)  # exactly mean 0, std 1, as the paper's inputs
    return x.to(device=device, dtype=torch.float32)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')} tensor"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) for v in value[:3]) + (", ..." if len(value) > 3 else "")
        return f"a {type(value).__name__} of {len(value)} ({inner})"
    return f"a {type(value).__name__}"
