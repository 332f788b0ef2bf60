"""Figures of run files for ``actprobe plot`` and ``actprobe compare --figure`` (matplotlib, Agg backend).

The layers drawn are the layer chain (``actprobe.roles.layer_chain``: the activations, else the
Conv/Linear sites) unless the caller picks sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .compare import Matching
from .reader import Run

DPI = 90
LINESTYLES = ("-", "--", ":", "-.")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: files, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(count: int) -> list[Any]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if count <= 10 else "viridis")
    return [cmap(i if count <= 10 else i / max(count - 1, 1)) for i in range(count)]


def save_figure(fig: Any, path: Path, dpi: int = DPI) -> Path:
    """Lay out, write as PNG (creating the folder) and close ``fig``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def _legend(ax: Any, count: int) -> None:
    if count <= 16:
        ax.legend(fontsize=6, loc="best", ncol=2 if count > 8 else 1)


def plot_run(run: Run, columns: Sequence[int], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>-mean-std.png`` (per-layer mean and std against step, as in the paper's Fig. 7, 9, 11) and
    ``<stem>-near-zero.png`` (near-zero % per layer at the first and last recorded step, Fig. 8, 10)."""
    plt = pyplot()
    colors = _colors(len(columns))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, stat in zip(axes, ("mean", "std")):
        for color, c in zip(colors, columns):
            ax.plot(run.step, run.stats[stat][:, c], color=color, lw=1, label=run.sites[c],
                    marker="." if run.rows < 30 else None)
        ax.set_title(f"{stat} per layer", fontsize=9)
        ax.set_xlabel("step")
        _legend(ax, len(columns))
    fig.suptitle(f"{run.path.name}", fontsize=9)
    written = [save_figure(fig, out_dir / f"{stem}-mean-std.png")]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(columns) + 2), 4))
    x = np.arange(len(columns))
    for k, (row, label) in enumerate(((0, "first"), (run.rows - 1, "last"))):
        values = 100 * run.stats["near_zero"][row, columns].astype(np.float64)
        ax.bar(x + (k - 0.5) * 0.4, values, 0.4, label=f"{label} recorded step ({int(run.step[row])})")
    ax.set_xticks(x, [run.sites[c] for c in columns], rotation=45 if len(columns) > 6 else 0, ha="right"
                  if len(columns) > 6 else "center", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel(f"near-zero (|x| ≤ {run.attrs.get('near_zero_eps', 0.05)}) %")
    ax.set_title(f"{run.path.name}: near-zero activations per layer", fontsize=9)
    ax.legend(fontsize=7)
    written.append(save_figure(fig, out_dir / f"{stem}-near-zero.png"))
    return written


def plot_compare(runs: Sequence[Run], matching: Matching, rows: Sequence[int], path: Path) -> Path:
    """Overlay of the runs: per-layer mean and std against step (colour: layer, line style: run), and
    near-zero % per layer at the compared step (bars: runs)."""
    plt = pyplot()
    sites = [s for s in matching.sites if s.role == "activation"] or list(matching.sites)
    colors = _colors(len(sites))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, stat in zip(axes[:2], ("mean", "std")):
        for color, site in zip(colors, sites):
            for r, run in enumerate(runs):
                ax.plot(run.step, run.stats[stat][:, site.columns[r]], color=color, lw=1,
                        ls=LINESTYLES[r % len(LINESTYLES)], label=f"{site.label} ({_tag(r)})")
        ax.set_title(f"{stat} per layer; line style = run", fontsize=9)
        ax.set_xlabel("step")
        _legend(ax, len(sites) * len(runs))
    ax = axes[2]
    x = np.arange(len(sites))
    width = 0.8 / len(runs)
    for r, run in enumerate(runs):
        values = [100 * float(run.stats["near_zero"][rows[r], s.columns[r]]) for s in sites]
        ax.bar(x + (r - (len(runs) - 1) / 2) * width, values, width,
               label=f"{_tag(r)}: {run.path.name} (step {int(run.step[rows[r]])})")
    ax.set_xticks(x, [s.label for s in sites], rotation=45 if len(sites) > 6 else 0,
                  ha="right" if len(sites) > 6 else "center", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_title("near-zero % per layer", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _tag(r: int) -> str:
    return chr(ord("A") + r) if r < 26 else str(r)
