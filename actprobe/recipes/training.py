"""One recipe configuration: train the paper's CNN with a probe attached and write its run file.

Each configuration writes its own HDF5 run file (docs/FORMAT.md, "Written by `actprobe recipe`"):
the probe's statistics of every step it records, the configuration as root attributes, and after
training an ``epochs/`` group with per-epoch train/validation loss and accuracy and the root
attribute ``complete = True``. A finished file with the same settings is reused, not rerun.

The training loop reads no device value per step: losses and correct counts are summed on the
device and read once per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import datasets
from ..errors import ActprobeError
from ..init import init_weights
from ..models import paper_cnn
from ..nn import WIBReLU, calibrate
from ..probe import Probe
from ..reader import Run, read
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


Progress = Callable[[str, int, int | None], None]  # (label, step, total steps) → None


def run_config(config: Config, path: Path, *, device: torch.device, data_root: Any = None,
               calibration_batches: int = 10, fresh: bool = False, progress: Progress | None = None) -> Run:
    """Train ``config`` (or reuse a finished file with the same settings) and return its run file."""
    if not fresh:
        reused = finished_run(path, config)
        if reused is not None:
            return reused
    data = datasets.load(config.data, data_root)
    per_class = config.per_class or None
    train = data.batches("train", batch_size=config.batch_size, shuffle=True, seed=config.seed, per_class=per_class)
    val = data.batches("test", batch_size=1000, shuffle=False, per_class=per_class)
    steps_per_epoch = len(train)
    total = steps_per_epoch * config.epochs
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
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=ADAM_BETAS)
    meta = config.attributes()
    del meta["every"]  # the probe writes its own
    meta.update(data_source=train.source, device=str(device), train_images=train.images, val_images=val.images,
                adam_betas=list(ADAM_BETAS))
    if mus:
        meta["wib_mu"] = list(mus.values())
        meta["wib_mu_sites"] = list(mus)
    path.parent.mkdir(parents=True, exist_ok=True)
    history: dict[str, list[float]] = {name: [] for name in ("epoch", "steps", *EPOCH_FIELDS)}
    started = time.perf_counter()
    step = 0
    with Probe(model, path, every=config.every, meta=meta, overwrite=True, flush_seconds=5.0) as probe:
        for epoch in range(config.epochs):
            if step >= total:
                break
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            for inputs, targets in train:
                inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                outputs = model(inputs)
                loss = nn.functional.cross_entropy(outputs, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                probe.step(loss=loss)
                loss_sum += loss.detach() * len(targets)
                correct += (outputs.detach().argmax(1) == targets).sum()
                seen += len(targets)
                step += 1
                if progress is not None:
                    progress(config.stem, step, total)
                if step >= total:
                    break
            val_loss, val_accuracy = evaluate(model, val, device)
            history["epoch"].append(epoch)
            history["steps"].append(step)
            history["train_loss"].append(float(loss_sum) / seen)
            history["train_accuracy"].append(float(correct) / seen)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_accuracy)
    if probe.error is not None:
        raise ActprobeError(f"recording {path} failed: {probe.error}")
    _finish(path, history, time.perf_counter() - started)
    return read(path)


def evaluate(model: nn.Module, batches: Any, device: torch.device) -> tuple[float, float]:
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


def _finish(path: Path, history: dict[str, list[float]], seconds: float) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        group = f.require_group("epochs")
        for name, values in history.items():
            dtype = np.int64 if name in ("epoch", "steps") else np.float64
            group.create_dataset(name, data=np.asarray(values, dtype=dtype))
        f.attrs["seconds"] = float(seconds)
        f.attrs["complete"] = True


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
