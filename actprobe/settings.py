"""``ProbeSettings``: the validated, frozen options of one ``Probe``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import OptionError

MAX_META_ITEMS = 256


@dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    """Options of a probe. See ``Probe`` for their meaning; values are checked on creation."""

    every: int = 1
    near_zero_eps: float = 0.05
    dead_eps: float = 1e-6
    flush_every: int = 100
    flush_seconds: float = 10.0
    train_only: bool = True
    overwrite: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive_int("every", self.every)
        _positive_int("flush_every", self.flush_every)
        _non_negative_float("near_zero_eps", self.near_zero_eps)
        _non_negative_float("dead_eps", self.dead_eps)
        _non_negative_float("flush_seconds", self.flush_seconds, allow_inf=True)
        for name in ("train_only", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be True or False, got {getattr(self, name)!r}")
        object.__setattr__(self, "meta", validate_meta(self.meta))

    @property
    def rows_per_flush(self) -> int:
        """Recorded rows between two flushes triggered by ``flush_every``."""
        return -(-self.flush_every // self.every)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive integer, got {value!r}")


def _non_negative_float(name: str, value: object, allow_inf: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and not math.isnan(value) and value >= 0 and (allow_inf or math.isfinite(value))
    if not ok:
        raise OptionError(f"{name} must be a non-negative number, got {value!r}")


RESERVED_ATTRIBUTES = frozenset({
    "format", "format_version", "actprobe_version", "torch_version", "created",
    "near_zero_eps", "dead_eps", "every",
})


def validate_meta(meta: object) -> dict[str, Any]:
    """Check that ``meta`` can be stored as HDF5 attributes and return a plain copy.

    Values may be str, bool, int, float, or flat lists/tuples/arrays of numbers or strings.
    """
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise OptionError(f"meta must be a dict of str to values, got {type(meta).__name__}")
    if len(meta) > MAX_META_ITEMS:
        raise OptionError(f"meta has {len(meta)} items; at most {MAX_META_ITEMS} are allowed")
    clean: dict[str, Any] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise OptionError(f"meta keys must be non-empty strings without '/', got {key!r}")
        if key in RESERVED_ATTRIBUTES:
            raise OptionError(f"meta key {key!r} is reserved by the file format; choose another name")
        clean[key] = _attribute_value(key, value)
    return clean


def _attribute_value(key: str, value: object) -> Any:
    if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        if array.ndim == 1 and (array.dtype.kind in "biuf" or array.dtype.kind == "U"):
            return array.tolist() if array.dtype.kind == "U" else array
    raise OptionError(
        f"meta[{key!r}] has type {type(value).__name__}; use str, bool, int, float or a flat list of them"
    )
