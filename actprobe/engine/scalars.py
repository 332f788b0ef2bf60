"""The values passed to ``Probe.step(name=value)``: which are recorded, and why others are not."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch


def scalar_value(value: object) -> float | torch.Tensor | None:
    """A number or a 1-element real tensor as it is recorded; None for anything else (an int beyond float64's
    range included)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, float):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return value
    if isinstance(value, np.generic) and np.isrealobj(value):
        return float(value)
    return None


def recordable_names(scalars: Mapping[str, object]) -> list[str]:
    """The names that get a column at the first recorded step: those with a recordable value."""
    return [name for name, value in scalars.items() if scalar_value(value) is not None]


def accepted(scalars: Mapping[str, object], add_column: Callable[[str], bool],
             warn_once: Callable[[str, str], None]) -> dict[str, float | torch.Tensor]:
    """The values of ``scalars`` that are recorded: numbers and 1-element tensors, under a name that has a
    column or gets one now (``add_column``: False when there is no room); each other one is reported once."""
    kept = {}
    for name, value in scalars.items():
        clean = scalar_value(value)
        if clean is None:
            warn_once(f"scalar-type:{name}", f"step({name}=…) is not a number within float64's range or a 1-element "
                      f"tensor ({type(value).__name__}); it is not recorded")
        elif not add_column(name):
            warn_once(f"scalar-new:{name}", f"step({name}=…) is not recorded: the file already has the most "
                      "scalar columns a probe keeps")
        else:
            kept[name] = clean
    return kept
