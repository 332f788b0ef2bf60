"""``ActprobeCallback``: a Hugging Face ``transformers.TrainerCallback`` that records ``Trainer.train``.

    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[ActprobeCallback("run.h5", grads=True)])

The probe attaches to the model when training begins and records one row per optimizer step
(``state.global_step``; with ``gradient_accumulation_steps=k`` the row merges the k forwards). Each
row's scalars are ``global_step`` and whatever the trainer logged right after that step (``loss`` —
the Trainer's mean over the steps since its last log —, ``learning_rate``, ``grad_norm``, ``eval_*``
metrics, …): a value every ``logging_steps`` rows, NaN in the others. The probe closes when training
ends; if training raises, call ``callback.close()`` (or let the process exit: a probe left open is
closed, its rows committed, at exit).
"""

from __future__ import annotations

import math
import os
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError:  # pragma: no cover - the message is the point
    raise ImportError("actprobe.integrations.huggingface needs transformers: pip install 'actprobe[hf]'") from None

import torch

from ..engine.probe import Probe
from .metrics import RowScalars, numbered, open_probe


class ActprobeCallback(TrainerCallback):
    """Record every ``train()`` of the trainer it is given to into ``path`` (a run file, or a distributed
    run's folder when the Trainer runs on several processes); ``probe_options`` are ``actprobe.Probe``'s
    (``params=True`` uses the trainer's optimizer)."""

    def __init__(self, path: str | os.PathLike[str], **probe_options: Any) -> None:
        self.path = path
        self.probe_options = probe_options
        self.probe: Probe | None = None
        self.trainings = 0  # train() calls: the second writes <stem>-2<suffix>, and so on
        self._pending: dict[str, float] | None = None  # what was logged after the step that just ended
        self._step = 0.0  # that step's number (state.global_step)
        self._rows = RowScalars()

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, optimizer: Any = None, **kwargs: Any) -> None:
        options = dict(self.probe_options)
        if options.get("params") and options.get("optimizer") is None:
            # accelerate wraps the optimizer: its step hooks are those of the torch optimizer inside
            inner = getattr(optimizer, "optimizer", None)
            options["optimizer"] = inner if isinstance(inner, torch.optim.Optimizer) else optimizer
        self.close()
        self.trainings += 1
        self.probe = open_probe(model, numbered(self.path, self.trainings), options)
        self._pending, self._rows = None, RowScalars()

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        self._end_row()  # the previous step's row, with what was logged after it

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.probe is not None:
            self._pending, self._step = {}, float(state.global_step)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self._pending is not None and logs:
            self._pending.update({name: float(value) for name, value in logs.items()
                                  if isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and math.isfinite(float(value))})

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        """End the last row and close the probe (also after a failed ``train()``)."""
        self._end_row()
        if self.probe is not None:
            self.probe.close()
            self.probe = None

    def _end_row(self) -> None:
        if self.probe is not None and self._pending is not None:
            self._rows.end_step(self.probe, self._pending, {"global_step": self._step})
        self._pending = None
