"""``ActprobeCallback``: a PyTorch Lightning callback that records a ``Trainer.fit`` with an actprobe Probe.

    trainer = lightning.Trainer(callbacks=[ActprobeCallback("run.h5", grads=True)])

The probe attaches to the LightningModule when fitting starts and records one row per training batch
that stepped an optimizer (with ``accumulate_grad_batches=k``, every k-th batch and an epoch's last:
the row merges those forwards; with several optimizers, the batch's steps together). Each row's
scalars are ``loss`` (the training step's, as Lightning hands it on: divided by k when accumulating),
``global_step`` (``trainer.global_step``) and every metric logged with ``self.log`` since the last row,
as logged (a validation metric lands on the first row after the validation that logged it). The probe closes when
fitting ends, fails or is interrupted. Under ``strategy="ddp"`` each rank records its file of a
distributed run (docs/FORMAT.md), read as one run.
"""

from __future__ import annotations

import os
from typing import Any

import torch

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError:  # pragma: no cover - the message is the point
    try:
        from pytorch_lightning import Callback, LightningModule, Trainer  # the older package name
    except ImportError:
        raise ImportError("actprobe.integrations.lightning needs PyTorch Lightning: "
                          "pip install 'actprobe[lightning]'") from None

from ..engine.probe import Probe
from .metrics import FreshMetrics, RowScalars, numbered, open_probe


class ActprobeCallback(Callback):
    """Record every fit of the trainer it is given to into ``path`` (a run file, or a distributed run's
    folder under DDP); ``probe_options`` are ``actprobe.Probe``'s (``every``, ``grads``, ``params`` —
    the module's first optimizer is passed for it —, ``hist_every``, ``select``, …)."""

    def __init__(self, path: str | os.PathLike[str], **probe_options: Any) -> None:
        super().__init__()
        self.path = path
        self.probe_options = probe_options
        self.probe: Probe | None = None
        self.fits = 0  # fits started: the second writes <stem>-2<suffix>, and so on
        self._global_step = 0
        self._metrics = FreshMetrics()
        self._rows = RowScalars()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        options = dict(self.probe_options)
        if options.get("params") and options.get("optimizer") is None:
            options["optimizer"] = trainer.optimizers[0]
        self.fits += 1
        self.probe = open_probe(pl_module, numbered(self.path, self.fits), options)
        self._global_step = trainer.global_step
        self._metrics = FreshMetrics(trainer.callback_metrics)  # what was logged before fitting is not new
        self._rows = RowScalars()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.probe is not None:  # training_step calls the module's children, not the module itself
            self.probe.begin_forward()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.probe is None or trainer.global_step == self._global_step:
            return  # no optimizer step yet (gradient accumulation): the forwards go into the next row
        self._global_step = trainer.global_step
        per_step: dict[str, Any] = {"global_step": trainer.global_step}
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            per_step["loss"] = loss.detach()
        logged = self._metrics.new(trainer.callback_metrics)
        if "loss" in logged:  # a metric the module logged as "loss" is kept as logged
            per_step.pop("loss", None)
        self._rows.end_step(self.probe, logged, per_step)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._close()  # also KeyboardInterrupt: the rows committed so far stay

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._close()

    def _close(self) -> None:
        if self.probe is not None:
            self.probe.close()
            self.probe = None
