"""The float64 NumPy reference of every statistic, straight from the definitions in docs/FORMAT.md.

Independent of the kernels (no shared code): the tests and ``bench/gpu_check.py`` hold every
backend against it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..runfile.format import DEAD_EPS, NEAR_ZERO_EPS, STATISTICS


def reference_statistics(x: torch.Tensor, unit_dim: int | None, near_zero_eps: float = NEAR_ZERO_EPS,
                         dead_eps: float = DEAD_EPS) -> dict[str, float]:
    """Every statistic of ``x`` in float64 NumPy; ``unit_dim`` as for ``tensor_statistics``."""
    a = x.detach().to(torch.float64).cpu().numpy()
    finite = np.isfinite(a)
    values = a[finite]
    out = {
        "count": float(values.size),
        "mean": float(values.mean()) if values.size else np.nan,
        "std": float(values.std()) if values.size else np.nan,
        "min": float(values.min()) if values.size else np.nan,
        "max": float(values.max()) if values.size else np.nan,
        "near_zero": float(np.mean(np.abs(a) <= near_zero_eps)),
        "nonfinite": float(1.0 - finite.mean()),
        "dead": np.nan,
    }
    if unit_dim is not None and a.ndim >= 2:
        per_unit = np.moveaxis(a, unit_dim, 0).reshape(a.shape[unit_dim], -1)
        stds = [np.std(row[np.isfinite(row)]) if np.isfinite(row).any() else np.nan for row in per_unit]
        out["dead"] = float(np.mean([s <= dead_eps for s in stds]))
    return out


def mismatches(got: dict[str, float], want: dict[str, float], rtol: float = 1e-5) -> list[str]:
    """The statistics of ``got`` not within ``rtol`` of ``want``, relatively, as messages. A mean near
    zero has no useful relative accuracy, so the mean's error is measured against max(|mean|, std)."""
    wrong = []
    for name in STATISTICS:
        g, w = got[name], want[name]
        if np.isnan(w):
            if not np.isnan(g):
                wrong.append(f"{name}: got {g}, want NaN")
            continue
        scale = max(abs(w), want["std"]) if name == "mean" and np.isfinite(want["std"]) else abs(w)
        if not abs(g - w) <= rtol * scale + 1e-12:
            wrong.append(f"{name}: got {g!r}, want {w!r}")
    return wrong
