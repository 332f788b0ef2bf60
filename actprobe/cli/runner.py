"""Running a model file: training with a probe attached, or an init check on standardised random inputs.

The loop never reads a device value: the loss goes to the probe and to the progress display as a
tensor, and the display decides when (rarely) to look at it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import positive_int
from ..engine.probe import Probe
from ..errors import ActprobeError, ModelFileError, OptionError
from ..training import Progress, StepOutput, resolve_device, run_loop
from .model_steps import DataBatches, ModelFileStep, describe, forward
from .modelfile import ModelFile
from .ranks import RankJob, in_job

INIT_CHECK_STEPS = 10
Announce = Callable[[str, tuple[str, ...]], None]  # (data source, notes) → None, before the first step


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
    grads: bool = False  # also the gradients' statistics (training only)
    params: bool = False  # also the parameters', their gradients' and updates' (training only)
    hist_every: int = 0  # histograms every k-th recorded step (0: none)
    overwrite: bool = False
    nproc: int = 1  # processes (DDP ranks); more than one: ``ranks.launch`` starts them under torchrun

    def __post_init__(self) -> None:
        for name in ("steps", "epochs", "every", "batch_size", "nproc"):
            positive_int(f"--{name.replace('_', '-')}", getattr(self, name), allow_none=True)
        if self.hist_every < 0:
            raise OptionError(f"--hist-every must be 0 (no histograms) or more, got {self.hist_every}")
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


def run_model_file(spec: ModelFile, options: RunOptions, progress: Progress | None = None,
                   announce: Announce | None = None) -> RunOutcome:
    """Build the model, then train it on ``data()`` or run the init check; the probe records all along.

    ``announce(source, notes)`` is told what the data is once it is known, before the first step.

    Raises:
        OptionError, ModelFileError, DataError, RunFileError: before anything was recorded.
        Failures after recording started come back as ``RunOutcome.error``, the file kept.
    """
    if options.out is None:
        raise OptionError("RunOptions.out must name the run file")
    device = resolve_device(options.device)
    if in_job() and (spec.data is None or options.init_check):
        raise OptionError("--nproc (torchrun) trains on data() in several processes; an init check runs in one")
    job = RankJob.join(device) if in_job() else None
    device = job.device if job is not None else device
    torch.manual_seed(options.seed)
    model = spec.call("model()", spec.model)
    if not isinstance(model, nn.Module):
        raise ModelFileError(f"{spec.path}: model() must return a torch.nn.Module, got {type(model).__name__}")
    model.to(device)
    if job is not None:
        outcome = None
        try:
            outcome = _train(spec, options, model, device, progress, announce, job)
            return outcome
        finally:  # every rank's file is closed before rank 0 reads the merged run; a rank that failed
            # does not wait for the others (they may be waiting for it in DDP's all-reduce): torchrun ends them
            job.finish(wait=outcome is not None and outcome.error is None and not outcome.interrupted)
    if spec.data is not None and not options.init_check:
        return _train(spec, options, model, device, progress, announce)
    for flag, wanted in (("--grads", options.grads), ("--params", options.params)):
        if wanted:
            raise OptionError(f"{flag} records what training computes, and an init check makes no backward pass "
                              f"nor optimizer step: "
                              f"{'drop --init-check' if spec.data is not None else f'define data() in {spec.path}'}")
    return _init_check(spec, options, model, device, progress, announce)


def _train(spec: ModelFile, options: RunOptions, model: nn.Module, device: torch.device,
           progress: Progress | None, announce: Announce | None, job: RankJob | None = None) -> RunOutcome:
    """Train on data(); in a ``--nproc`` job, the model wrapped in DDP on this rank's share of the batches
    (the probe watches the model itself, so that its sites have the names of a single-process run)."""
    batches = DataBatches(spec, device)
    step = ModelFileStep(spec, job.wrap(model) if job is not None else model)
    try:
        length: int | None = len(batches)
    except TypeError:  # an iterable without a length
        length = None
    if job is not None and length is None and options.steps is None:
        raise OptionError(f"--nproc: data() of {spec.path.name} has no length, so the ranks cannot be given as many "
                          "batches each; pass --steps")
    per_epoch = length if job is None or length is None else length // job.world
    total = options.steps if options.steps is not None else (
        None if per_epoch is None else (options.epochs or 1) * per_epoch)
    model.train()
    return _record(options, model, device, "train", batches.source, batches.notes, progress, announce,
                   step=step, batches=batches if job is None else job.shard(batches, length),
                   epochs=None if options.steps is not None else (options.epochs or 1),
                   total=total, optimizer=step.optimizer)


def _init_check(spec: ModelFile, options: RunOptions, model: nn.Module, device: torch.device,
                progress: Progress | None, announce: Announce | None) -> RunOutcome:
    if options.epochs is not None:
        raise OptionError(f"--epochs needs data(); {spec.path} runs an init check (use --steps)")
    if spec.example_input is None and spec.input_shape is None:
        raise ModelFileError(f"{spec.path} defines neither data() nor input_shape or example_input(); "
                             "the init check needs one of them")
    steps = options.steps or INIT_CHECK_STEPS
    generator = torch.Generator().manual_seed(options.seed)

    def forward_pass(index: int) -> None:
        # the first pass runs with autograd on (its graph is dropped, no backward): the probe traces the
        # layer graph through it, functional code such as residual additions included
        with torch.enable_grad() if index == 0 else contextlib.nullcontext():
            forward(spec, model, _init_input(spec, options, generator, device), f"at init-check pass {index}")

    model.train()  # as at the first training step (dropout on, batch statistics in norm layers)
    return _record(options, model, device, "init-check", _init_source(spec, options, steps), (), progress, announce,
                   step=forward_pass, batches=lambda epoch: range(steps), epochs=1, total=steps,
                   train_only=False, context=torch.no_grad())


def _record(options: RunOptions, model: nn.Module, device: torch.device, mode: str, source: str,
            notes: tuple[str, ...], progress: Progress | None, announce: Announce | None, *,
            step: Callable[[Any], StepOutput | None], batches: Callable[[int], Iterable[Any]], epochs: int | None,
            total: int | None, train_only: bool = True,
            context: contextlib.AbstractContextManager[Any] | None = None,
            optimizer: torch.optim.Optimizer | None = None) -> RunOutcome:
    """Drive the training loop with a probe attached to ``model``."""
    meta = {"command": "actprobe run", "model_file": str(options.model_file), "mode": mode,
            "data_source": source, "seed": options.seed, "device": str(device)}
    started = time.perf_counter()  # the probe's setup and its last commit count, as the steps do
    with context or contextlib.nullcontext(), Probe(
            model, options.out, select=list(options.select) or None, every=options.every, meta=meta,
            overwrite=options.overwrite, train_only=train_only, grads=options.grads, params=options.params,
            optimizer=optimizer, hist_every=options.hist_every,
            distributed=None if in_job() else False) as probe:  # RANK/WORLD_SIZE alone make no job
        if announce is not None:
            announce(source, notes)
        result = run_loop(step, batches, probe=probe, steps=options.steps if mode == "train" else total,
                          epochs=epochs, progress=progress, label="[bold]training" if mode == "train" else
                          "[bold]init check", total=total, interruptible=True)
    return RunOutcome(options.out, mode, result.steps, time.perf_counter() - started, source, str(device),
                      result.interrupted, result.error)


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
                                 f"got {describe(value)}")
        moved = tuple(t.to(device) for t in tensors)
        return moved if isinstance(value, (tuple, list)) else moved[0]
    x = torch.randn(options.batch_size, *spec.input_shape, generator=generator, dtype=torch.float64)
    x = (x - x.mean()) / x.std(correction=0)  # exactly mean 0, std 1, as the paper's inputs
    return x.to(device=device, dtype=torch.float32)


