"""``ProbeSettings``: the validated, frozen options of one ``Probe``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import MAX_INTEGER, non_negative, positive_int
from ..errors import OptionError
from ..runfile.format import DEAD_EPS, NEAR_ZERO_EPS

MAX_META_ITEMS = 256
FLUSH_EVERY = 100  # steps between two commits, at most
FLUSH_SECONDS = 10.0  # seconds between two commits, at most (checked at each step)

# Probe(kernel=…) → the options of the statistics dispatcher (``stats.dispatch.MomentKernel``).
KERNEL_OPTIONS: dict[str, dict[str, Any]] = {
    "auto": {},
    "torch": {"use_c": False, "use_triton": False},
}


@dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    """Options of a probe. See ``Probe`` for their meaning; values are checked on creation."""

    every: int = 1
    near_zero_eps: float = NEAR_ZERO_EPS
    dead_eps: float = DEAD_EPS
    flush_every: int = FLUSH_EVERY
    flush_seconds: float = FLUSH_SECONDS
    train_only: bool = True
    grads: bool = False
    params: bool = False
    hist_every: int = 0
    overwrite: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)
    kernel: str = "auto"

    def __post_init__(self) -> None:
        positive_int("every", self.every)
        positive_int("flush_every", self.flush_every)
        non_negative("near_zero_eps", self.near_zero_eps)
        non_negative("dead_eps", self.dead_eps)
        non_negative("flush_seconds", self.flush_seconds, allow_inf=True)
        if not isinstance(self.hist_every, int) or isinstance(self.hist_every, bool) or self.hist_every < 0:
            raise OptionError(f"hist_every must be a whole number ≥ 0 (0: no histograms), got {self.hist_every!r}")
        if self.hist_every > MAX_INTEGER:
            raise OptionError(f"hist_every must be at most 2**62, got {self.hist_every!r}")
        for name in ("train_only", "overwrite", "grads", "params"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.kernel not in KERNEL_OPTIONS:
            raise OptionError(f"kernel must be one of {', '.join(KERNEL_OPTIONS)}, got {self.kernel!r}")
        object.__setattr__(self, "meta", validate_meta(self.meta))

    @property
    def rows_per_flush(self) -> int:
        """Recorded rows between two flushes triggered by ``flush_every``."""
        return -(-self.flush_every // self.every)


RESERVED_ATTRIBUTES = frozenset({
    "format", "format_version", "actprobe_version", "torch_version", "created", "run_id",
    "near_zero_eps", "dead_eps", "every", "grads", "params", "hist_every",
    "distributed", "rank", "world_size", "segment", "job",
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
