"""Every figure actprobe draws, from run files (matplotlib, Agg backend: files, never windows).

``actprobe plot`` and ``actprobe compare --figure`` draw ``plot_run`` and ``plot_compare``; the
recipes draw the WIB-ReLU paper's figures from their own run files with the functions below them.
Every function returns the PNG paths it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.compare import Matching
from ..analysis.roles import activation_sites, mean_over_steps
from ..runfile.format import NEAR_ZERO_EPS
from ..runfile.reader import Run
from .text import figure_label

DPI = 90
RECIPE_DPI = 80
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
            ax.plot(run.step, run.stats[stat][:, c], color=color, lw=1, label=figure_label(run.sites[c]),
                    marker="." if run.rows < 30 else None)
        ax.set_title(f"{stat} per layer", fontsize=9)
        ax.set_xlabel("step")
        _legend(ax, len(columns))
    fig.suptitle(figure_label(run.path.name), fontsize=9)
    written = [save_figure(fig, out_dir / f"{stem}-mean-std.png")]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(columns) + 2), 4))
    x = np.arange(len(columns))
    for k, (row, label) in enumerate(((0, "first"), (run.rows - 1, "last"))):
        values = 100 * run.stats["near_zero"][row, columns].astype(np.float64)
        ax.bar(x + (k - 0.5) * 0.4, values, 0.4, label=f"{label} recorded step ({int(run.step[row])})")
    ax.set_xticks(x, [figure_label(run.sites[c]) for c in columns], rotation=45 if len(columns) > 6 else 0, ha="right"
                  if len(columns) > 6 else "center", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel(f"near-zero (|x| ≤ {run.attrs.get('near_zero_eps', NEAR_ZERO_EPS)}) %")
    ax.set_title(figure_label(f"{run.path.name}: near-zero activations per layer"), fontsize=9)
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
                        ls=LINESTYLES[r % len(LINESTYLES)], label=figure_label(f"{site.label} ({_tag(r)})"))
        ax.set_title(f"{stat} per layer; line style = run", fontsize=9)
        ax.set_xlabel("step")
        _legend(ax, len(sites) * len(runs))
    ax = axes[2]
    x = np.arange(len(sites))
    width = 0.8 / len(runs)
    for r, run in enumerate(runs):
        values = [100 * float(run.stats["near_zero"][rows[r], s.columns[r]]) for s in sites]
        ax.bar(x + (r - (len(runs) - 1) / 2) * width, values, width,
               label=figure_label(f"{_tag(r)}: {run.path.name} (step {int(run.step[rows[r]])})"))
    ax.set_xticks(x, [figure_label(s.label) for s in sites], rotation=45 if len(sites) > 6 else 0,
                  ha="right" if len(sites) > 6 else "center", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_title("near-zero % per layer", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _tag(r: int) -> str:
    return chr(ord("A") + r) if r < 26 else str(r)


# -- the recipes' figures, in the manner of the WIB-ReLU paper's ---------------------------------
def experiment_panels(panels: Sequence[tuple[str, Run, int]], path: Path) -> Path:
    """Fig. 3–5: one row per ``(title, run, column)``, the column's mean and std against experiment."""
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 2, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for row, (title, run, column) in enumerate(panels):
        for ax, stat in zip(axes[row], ("mean", "std")):
            ax.plot(np.arange(1, run.rows + 1), run.stats[stat][:, column], marker=".", lw=1)
            ax.set_title(f"{title}: {stat}", fontsize=8)
            ax.set_xlabel("experiment", fontsize=8)
            ax.tick_params(labelsize=7)
    return save_figure(fig, path, RECIPE_DPI)


def depth_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str, path: Path) -> Path:
    """Eq. 4: per ``(label, measured, theory)``, the std per layer on a log scale (dashed: theory)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, measured, theory in curves:
        layers = np.arange(1, len(measured) + 1)
        line = ax.semilogy(layers, measured, marker="o", ms=3, label=label)[0]
        ax.semilogy(layers, theory, ls="--", lw=0.8, color=line.get_color())
    ax.set_xlabel("layer")
    ax.set_ylabel("std of the layer's output (median)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path, RECIPE_DPI)


def layer_lines(runs: Mapping[str, Run], title: str, path: Path) -> Path:
    """Per-layer mean and std of the activation outputs against step; one row of panels per run."""
    plt = pyplot()
    fig, axes = plt.subplots(len(runs), 2, figsize=(9, 2.1 * len(runs)), squeeze=False, sharex=True)
    for row, (label, run) in enumerate(runs.items()):
        columns = activation_sites(run)
        for ax, stat in zip(axes[row], ("mean", "std")):
            for layer, column in enumerate(columns, 1):
                ax.plot(run.step, run.stats[stat][:, column], lw=0.8, label=f"layer {layer}",
                        marker="." if run.rows < 30 else None)
            ax.axhline(0.0 if stat == "mean" else 1.0, color="grey", lw=0.5, ls=":")
            ax.set_title(f"{label}: {stat}", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[row][1].legend(fontsize=6, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("iteration", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, RECIPE_DPI)


def near_zero_bars(runs: Mapping[str, Run], title: str, path: Path) -> Path:
    """Near-zero % of each activation layer (average over the recorded steps), grouped by layer."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(runs), 1)
    for i, (label, run) in enumerate(runs.items()):
        values = 100 * mean_over_steps(run, "near_zero", activation_sites(run))
        ax.bar(np.arange(1, len(values) + 1) + (i - (len(runs) - 1) / 2) * width, values, width, label=label)
    ax.set_xlabel("activation layer")
    ax.set_ylabel("near-zero activations (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=3)
    return save_figure(fig, path, RECIPE_DPI)


def epoch_curves(groups: Mapping[str, Sequence[Run]], title: str, path: Path) -> Path:
    """Fig. 12/13: train/validation loss and accuracy per epoch; the line is the mean over seeds,
    the band spans the seeds."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6))
    fields = (("train_loss", "(a) train loss"), ("val_loss", "(b) validation loss"),
              ("train_accuracy", "(c) train accuracy"), ("val_accuracy", "(d) validation accuracy"))
    for ax, (field, label) in zip(axes.flat, fields):
        for name, runs in groups.items():
            values = np.stack([run.epochs[field] for run in runs])
            epochs = np.arange(1, values.shape[1] + 1)
            line = ax.plot(epochs, values.mean(0), lw=1.2, marker=".", label=name)[0]
            if len(runs) > 1:
                ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, RECIPE_DPI)
