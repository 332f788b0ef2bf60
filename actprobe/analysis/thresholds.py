"""The one thresholds table of every verdict (``show``, ``diagnose``, ``run``): names, defaults, uses.

Each field's metadata says which rules use it and what it means; docs/DIAGNOSE.md's thresholds
table is generated from it (``actprobe.analysis.rules.thresholds_markdown``) and a test keeps the
two equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .._checks import non_negative
from ..errors import OptionError


def _threshold(default: float | int, rules: str, meaning: str) -> Any:
    return field(default=default, metadata={"rules": rules, "meaning": meaning})


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """When each rule fires; change any with ``Thresholds(name=value)`` or ``--threshold NAME=VALUE``."""

    vanishing_factor: float = _threshold(0.75, "vanishing", "the per-layer std factor (geometric mean along a path) below which the path vanishes")
    exploding_factor: float = _threshold(1.33, "exploding", "the same factor above which the path explodes")
    steady: float = _threshold(0.75, "vanishing, exploding",
                               "the fraction of consecutive layers along the path that must fall (or rise)")
    min_layers: int = _threshold(3, "vanishing, exploding", "the fewest layers (at least 2) a path needs to be judged")
    grad_vanishing_factor: float = _threshold(
        0.5, "vanishing-gradient", "the per-layer factor (geometric mean along a path, from its last layer back "
        "to its first) of the gradient's size below which the gradient vanishes on its way back")
    grad_exploding_factor: float = _threshold(2.0, "exploding-gradient", "the same factor above which it explodes")
    update_ratio_low: float = _threshold(
        1e-5, "update-ratio", "the update-to-data ratio std(Δw)/std(w) (median over the recorded steps) below which "
        "a parameter barely moves")
    update_ratio_high: float = _threshold(0.1, "update-ratio", "the same ratio above which its steps are too large")
    mean_shift: float = _threshold(0.5, "mean-shift", "abs(mean) above this many stds after a ReLU-like module")
    saturation: float = _threshold(0.5, "saturation", "the near-zero fraction above which a site is saturated")
    saturation_zeroing: float = _threshold(
        0.75, "saturation", "the same after ReLU, ReLU6, RReLU, LeakyReLU and PReLU, which put about half of "
        "centred inputs at or near zero by design")
    dead: float = _threshold(0.2, "dead-units", "the dead fraction above which a site is reported")
    dead_error: float = _threshold(0.5, "dead-units", "the dead fraction above which it is an error")
    drift_factor: float = _threshold(5.0, "drift", "the change of a site's std over training, either way")
    drift_window: float = _threshold(0.1, "drift", "the fraction (at most 0.5) of the rows in each window whose median std is compared")
    drift_min_rows: int = _threshold(10, "drift", "the fewest rows a run needs to be judged for drift")
    rank_factor: float = _threshold(10.0, "rank-outlier", "the factor between one rank's scale at a site and the "
                                    "median of the other ranks' beyond which the rank is reported")
    drift_from: float = _threshold(0.25, "drift", "where the first window starts, as a fraction of the rows: "
                                   "the early growth out of a small init is not drift")

    def __post_init__(self) -> None:
        for f in fields(self):
            non_negative(f"threshold {f.name}", getattr(self, f.name))
        if self.min_layers < 2:
            raise OptionError(f"threshold min_layers must be at least 2 (a path of one layer has no factor), "
                              f"got {self.min_layers}")
        if not self.drift_from < 1:
            raise OptionError(f"threshold drift_from must be a fraction below 1, got {self.drift_from}")
        if not 0 < self.drift_window <= 0.5:
            raise OptionError(f"threshold drift_window must be a fraction in (0, 0.5], got {self.drift_window}")

    @classmethod
    def parse(cls, assignments: Sequence[str]) -> Thresholds:
        """``["drift_factor=3", …]`` → Thresholds; unknown names and bad values are ``OptionError``."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in assignments:
            name, sep, text = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in known:
                raise OptionError(f"--threshold {item!r}: use NAME=VALUE with NAME one of {', '.join(known)}")
            try:
                values[name] = int(text) if known[name] in ("int", int) else float(text)
            except ValueError:
                raise OptionError(f"--threshold {item!r}: {text!r} is not a number") from None
        return cls(**values)


def as_stored(threshold: float) -> float:
    """A fraction as the file stores it (float32), so that exactly 10% dead is not "more than 10%"."""
    return float(np.float32(threshold))
