"""The values passed to ``Probe.step(name=value)``: which are recorded, and why others are not."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch


def scalar_value(value: object) -> float | torch.Tensor | None:
    """A number or a 1-element real tensor as it is recorded; None for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return value
    if isinstance(value, np.generic) and np.isrealobj(value):
        return float(value)
    return None


def recordable_names(scalars: Mapping[str, object]) -> list[str]:
    """The names that get a column: those with a recordable value at the first recorded step."""
    return [name for name, value in scalars.items() if scalar_value(value) is not None]


def accepted(scalars: Mapping[str, object], columns: Mapping[str, int],
             warn_once: Callable[[str, str], None]) -> dict[str, float | torch.Tensor]:
    """The values of ``scalars`` that have a column; each other one is reported once."""
    kept = {}
    for name, value in scalars.items():
        clean = scalar_value(value)
        if clean is None:
            warn_once(f"scalar-type:{name}", f"step({name}=…) is not a number or a 1-element tensor "
                      f"({type(value).__name__}); it is not recorded")
        elif name not in columns:
            warn_once(f"scalar-new:{name}", f"step({name}=…) was not passed at the first recorded step, so "
                      "the file has no column for it; it is not recorded")
        else:
            kept[name] = clean
    return kept
