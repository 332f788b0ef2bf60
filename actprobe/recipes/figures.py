"""The recipes' figures, in the manner of the WIB-ReLU paper's, drawn from our own run files.

Drawn with matplotlib through ``actprobe.plots`` (Agg backend: files, no windows).
Every function returns the PNG paths it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..plots import pyplot as _plt
from ..plots import save_figure
from ..reader import Run
from .layers import activation_sites, linear_sites, mean_over_steps

DPI = 80


def _save(fig: Any, path: Path) -> Path:
    return save_figure(fig, path, DPI)


def toy_figures(runs: Mapping[str, Run], cases: Sequence[Any], options: Any, out: Path) -> list[Path]:
    from .toy import output_columns, theory

    plt = _plt()
    by_key = {case.key: case for case in cases}
    written = []
    panels = {"fig3": (("linear-normal", "(a)"), ("linear-eq5", "(b)")),
              "fig4": (("relu-eq5", "(a)"), ("relu-kaiming", "(b)")),
              "fig5": (("wib-kaiming", ""),)}
    for name, pairs in panels.items():
        fig, axes = plt.subplots(len(pairs), 2, figsize=(8, 2.6 * len(pairs)), squeeze=False)
        for row, (key, tag) in enumerate(pairs):
            run = runs[key]
            column = output_columns(run)[-1]
            for ax, stat in zip(axes[row], ("mean", "std")):
                ax.plot(np.arange(1, run.rows + 1), run.stats[stat][:, column], marker=".", lw=1)
                ax.set_title(f"{tag} {by_key[key].label}: {stat}", fontsize=8)
                ax.set_xlabel("experiment", fontsize=8)
                ax.tick_params(labelsize=7)
        written.append(_save(fig, out / f"toy-{name}.png"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for case in cases:
        if not case.deep:
            continue
        run = runs[case.key]
        z = np.median(run.stats["std"][:, linear_sites(run)].astype(np.float64), axis=0)
        layers = np.arange(1, len(z) + 1)
        line = ax.semilogy(layers, z, marker="o", ms=3, label=case.label.removeprefix("deep, "))[0]
        ax.semilogy(layers, theory(case, options.width, len(z))[0], ls="--", lw=0.8, color=line.get_color())
    ax.set_xlabel("layer")
    ax.set_ylabel("std of the layer's output (median)")
    ax.set_title("Eq. 4: std per layer (dashed: theory)", fontsize=9)
    ax.legend(fontsize=7)
    written.append(_save(fig, out / "toy-eq4-deep.png"))
    return written


def layer_lines(runs: Mapping[str, Run], title: str, path: Path) -> Path:
    """Per-layer mean and std of the activation outputs against step; one row of panels per run."""
    plt = _plt()
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
    return _save(fig, path)


def near_zero_bars(runs: Mapping[str, Run], title: str, path: Path) -> Path:
    """Near-zero % of each activation layer (average over the recorded steps), grouped by layer."""
    plt = _plt()
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
    return _save(fig, path)


def epoch_curves(groups: Mapping[str, Sequence[Run]], title: str, path: Path) -> Path:
    """Fig. 12/13: train/validation loss and accuracy per epoch; the line is the mean over seeds,
    the band spans the seeds."""
    plt = _plt()
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
    return _save(fig, path)
