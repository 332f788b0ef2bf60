"""One recipe configuration: train the paper's CNN with a probe attached and write its run file.

Each configuration writes its own HDF5 run file (docs/FORMAT.md, "Written by `actprobe recipe`"):
the probe's statistics of every step it records, the configuration as root attributes, and after
training an ``epochs/`` group with per-epoch train/validation loss and accuracy and the root
attribute ``complete = True``. A finished file with the same settings is reused, not rerun.

Training goes through the one training loop (``actprobe.training``), which reads no device value
per step: losses and correct counts are summed on the device and read once per epoch. The run
file is completed through ``actprobe.runfile`` like every other write.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .. import datasets
from ..engine.probe import Probe
from ..errors import ActprobeError
from ..init import init_weights
from ..models import paper_cnn
from ..nn import WIBReLU, calibrate
from ..runfile.reader import Run, read
from ..runfile.storage import finish_run
from ..training import Progress, StepOutput, TrainStep, evaluate, run_loop
from .options import ADAM_BETAS

EPOCH_FIELDS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass(frozen=True, kw_only=True)
class Config:
    """One trained configuration; its fields are the run file's root attributes."""

    recipe: str
    data: str
    init: str
    activation: str
    seed: int
    optimizer: str  # "adam"
    lr: float
    epochs: int  # epochs asked for; the run stops earlier when ``iterations`` is reached
    batch_size: int
    iterations: int = 0  # 0: no step limit
    per_class: int = 0  # 0: the full data set
    every: int = 1

    @property
    def stem(self) -> str:
        return f"{self.data}-{self.init}-{self.activation}-seed{self.seed}"

    def attributes(self) -> dict[str, Any]:
        """The root attributes; ``every`` is the file format's own attribute, written by the probe."""
        return asdict(self)


def run_config(config: Config, path: Path, *, device: torch.device, data_root: Any = None,
               calibration_batches: int = 10, fresh: bool = False,
               progress: Progress | None = None) -> tuple[Run, float | None]:
    """Train ``config`` (or reuse a finished file with the same settings): its run file, and the
    seconds training took (None when the file was reused)."""
    if not fresh:
        reused = finished_run(path, config)
        if reused is not None:
            return reused, None
    data = datasets.load(config.data, data_root)
    per_class = config.per_class or None
    train = data.batches("train", batch_size=config.batch_size, shuffle=True, seed=config.seed, per_class=per_class)
    val = data.batches("test", batch_size=1000, shuffle=False, per_class=per_class)
    total = len(train) * config.epochs
    if config.iterations:
        total = min(total, config.iterations)
    torch.manual_seed(config.seed)
    model = paper_cnn(data.channels, len(data.classes), config.activation)
    init_weights(model, config.init)
    mus: dict[str, float] = {}
    if any(isinstance(m, WIBReLU) for m in model.modules()):
        calibration = [batch for _, batch in zip(range(calibration_batches),
                                                 data.batches("train", batch_size=config.batch_size, shuffle=True,
                                                              seed=10_000 + config.seed, per_class=per_class))]
        mus = calibrate(model, calibration)
    model.to(device)
    step = TrainStep(model, torch.optim.Adam(model.parameters(), lr=config.lr, betas=ADAM_BETAS))
    history = EpochHistory(model, val, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()  # the probe's setup and its last commit count too
    with Probe(model, path, every=config.every, meta=_meta(config, train, val, device, mus), overwrite=True,
               flush_seconds=5.0) as probe:
        model.train()
        run_loop(step, lambda epoch: _on_device(train, device), probe=probe, steps=total,
                          epochs=config.epochs, progress=progress, label=f"  {config.stem}", total=total,
                          on_step=history.add_step, on_epoch_end=history.end_epoch)
    if probe.error is not None:
        raise ActprobeError(f"recording {path} failed: {probe.error}")
    seconds = time.perf_counter() - started
    finish_run(path, history.columns, {"seconds": float(seconds), "complete": True})
    return read(path), seconds


def _meta(config: Config, train: Any, val: Any, device: torch.device, mus: dict[str, float]) -> dict[str, Any]:
    meta = config.attributes()
    del meta["every"]  # the probe writes its own
    meta.update(data_source=train.source, device=str(device), train_images=train.images, val_images=val.images,
                adam_betas=list(ADAM_BETAS))
    if mus:
        meta["wib_mu"] = list(mus.values())
        meta["wib_mu_sites"] = list(mus)
    return meta


def _on_device(batches: Any, device: torch.device) -> Any:
    for inputs, targets in batches:
        yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


class EpochHistory:
    """Per-epoch train loss and accuracy (summed on the device, read once an epoch) and validation."""

    def __init__(self, model: torch.nn.Module, val: Any, device: torch.device) -> None:
        self.model, self.val, self.device = model, val, device
        self.columns: dict[str, list[float]] = {name: [] for name in ("epoch", "steps", *EPOCH_FIELDS)}
        self._reset()

    def _reset(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.seen = 0

    def add_step(self, step: int, output: StepOutput | None) -> None:
        assert output is not None and output.loss is not None and output.targets is not None
        targets = output.targets
        self.loss_sum += output.loss * len(targets)
        self.correct += (output.outputs.argmax(1) == targets).sum()
        self.seen += len(targets)

    def end_epoch(self, epoch: int, steps: int) -> None:
        val_loss, val_accuracy = evaluate(self.model, self.val, self.device)
        values = (epoch, steps, float(self.loss_sum) / self.seen, float(self.correct) / self.seen, val_loss,
                  val_accuracy)
        for name, value in zip(self.columns, values):
            self.columns[name].append(value)
        self._reset()


def finished_run(path: Path, config: Config) -> Run | None:
    """The run file at ``path`` when it is finished and was made with exactly ``config``, else None."""
    if not path.is_file():
        return None
    try:
        run = read(path)
    except ActprobeError:
        return None
    if not run.attrs.get("complete"):
        return None
    for key, value in config.attributes().items():
        stored = run.attrs.get(key)
        if isinstance(value, float):
            if not isinstance(stored, (int, float)) or not math.isclose(stored, value, rel_tol=1e-12):
                return None
        elif stored != value:
            return None
    return run
