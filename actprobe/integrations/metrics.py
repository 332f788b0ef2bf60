"""Which of a framework's logged metrics are new since the last recorded row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


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
