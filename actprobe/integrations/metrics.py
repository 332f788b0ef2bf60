"""What the framework callbacks share: which logged metrics are new since the last row, the file of the
n-th training run of one callback, and a probe that cannot stop the training it should watch."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine.probe import Probe
from ..errors import ActprobeError, ActprobeWarning


class FreshMetrics:
    """Metrics logged since the last call: a framework keeps the last value of every metric it was given
    (a validation loss stays there for the steps after it), as the same object until it is logged again.
    The objects seen last are kept (so that identity is meaningful) and compared: no value is read."""

    def __init__(self, seen: Mapping[str, Any] | None = None) -> None:
        self._seen: dict[str, Any] = dict(seen or {})

    def new(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        fresh = {}
        for name, value in metrics.items():
            if self._seen.get(name) is value:
                continue
            self._seen[name] = value
            if isinstance(value, torch.Tensor):
                if value.numel() == 1 and not value.is_complex():
                    fresh[name] = value.detach()
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                fresh[name] = value
        return fresh


def numbered(path: str | os.PathLike[str], n: int) -> Path:
    """The path of a callback's n-th training run: ``path`` itself, then ``<stem>-2<suffix>``, …"""
    path = Path(path)
    return path if n <= 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")


def open_probe(model: nn.Module, path: Path, options: Mapping[str, Any]) -> Probe | None:
    """A probe on ``model``; None — with one ``ActprobeWarning`` — when it cannot be made (the file
    exists, a bad option): the training goes on unrecorded rather than not at all."""
    try:
        return Probe(model, path, **options)
    except ActprobeError as exc:
        warnings.warn(f"actprobe does not record this training: {exc}", ActprobeWarning, stacklevel=3)
        return None


class RowScalars:
    """The scalars of a callback's rows: a metric logged at a step the probe does not record (``every=k``)
    waits for the next recorded row, where a later value of it replaces it; ``per_step`` values (the step's
    loss, its number) belong to their own step only."""

    def __init__(self) -> None:
        self._waiting: dict[str, Any] = {}

    def end_step(self, probe: Probe, logged: Mapping[str, Any], per_step: Mapping[str, Any]) -> None:
        """End the probe's step with what was logged since the last recorded row."""
        if not probe.recording:
            self._waiting.update(logged)
            probe.step()
            return
        scalars = {**self._waiting, **logged, **per_step}
        self._waiting = {}
        probe.step(**scalars)
