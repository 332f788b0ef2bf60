"""Shared helpers: the float64 NumPy reference for the statistics, and small real models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from actprobe.models import paper_cnn  # noqa: F401  (the tests import it from here)

# The README's test command names the data folder relative to the checkout; tests that run in other
# folders need it absolute.
if os.environ.get("ACTPROBE_DATA"):
    os.environ["ACTPROBE_DATA"] = str(Path(os.environ["ACTPROBE_DATA"]).resolve())

STATS = ("count", "mean", "std", "min", "max", "near_zero", "dead", "nonfinite")


def reference_statistics(x: torch.Tensor, unit_dim: int | None, near_zero_eps: float = 0.05,
                         dead_eps: float = 1e-6) -> dict[str, float]:
    """Independent float64 NumPy computation of every statistic, straight from the definitions."""
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


def assert_statistics_close(got: dict[str, float], want: dict[str, float], rtol: float = 1e-5) -> None:
    """Each statistic within ``rtol`` of the reference, relatively. A mean near zero has no useful
    relative accuracy, so the mean's error is measured against max(|mean|, std), its natural scale."""
    for name in STATS:
        g, w = got[name], want[name]
        if np.isnan(w):
            assert np.isnan(g), f"{name}: got {g}, want NaN"
            continue
        scale = max(abs(w), want["std"]) if name == "mean" and np.isfinite(want["std"]) else abs(w)
        assert abs(g - w) <= rtol * scale + 1e-12, f"{name}: got {g!r}, want {w!r}"


def train_steps(model: nn.Module, steps: int, *, probe=None, seed: int = 0, batch: int = 32,
                shape: tuple[int, ...] = (1, 28, 28)) -> list[torch.Tensor]:
    """A few SGD steps on standardised random inputs; returns the losses (detached)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        x = torch.randn((batch, *shape), generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if probe is not None:
            probe.step(loss=loss)
        losses.append(loss.detach())
    return losses


def assert_one_line_error(result, *fragments: str) -> None:
    """A CLI result that failed on bad input: exit 2, one ``error: …`` line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
