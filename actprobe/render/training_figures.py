"""The figures of gradients, parameter updates and histograms (``actprobe plot`` on a file recorded
with ``grads``, ``params`` or ``hist_every``): a gradient's std per layer at the first and last
recorded step, each parameter's update-to-data ratio against step, and a "colorful dimension"
image per site (step on x, histogram bin on y, log counts as colour)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..analysis.thresholds import Thresholds
from ..runfile.reader import Run
from ..analysis.series import POINTS
from .figures import labelled_indices, per_site_width, positive, pyplot, save_figure, site_label, site_ticks
from .text import figure_label

MAX_HIST_PANELS = 12  # sites drawn as histogram images (evenly spread over the chosen ones)
# shaded on the update-ratio panel: where the update-ratio rule stays quiet (its default thresholds)
RATIO_BAND = (Thresholds().update_ratio_low, Thresholds().update_ratio_high)


def training_figures(run: Run, columns: Sequence[int], out_dir: Path, stem: str) -> list[Path]:
    """The figures this run has data for (none when it has no gradients, parameters or histograms)."""
    written = []
    if run.grad_stats:
        written.append(gradient_profile(run, columns, out_dir / f"{stem}-grad-std.png"))
    if run.param_stats:
        written.append(update_ratios(run, out_dir / f"{stem}-update-ratio.png"))
    if run.hist is not None and len(run.hist.step):
        for group in run.hist.groups:
            written.append(histogram_images(run, columns, group, out_dir / f"{stem}-{group.replace('_', '-')}.png"))
    return written


def _rows(count: int) -> np.ndarray:
    """At most POINTS evenly spaced rows of ``count`` (the steps drawn per line or image)."""
    return np.unique(np.linspace(0, count - 1, min(count, POINTS)).round().astype(int))


def gradient_profile(run: Run, columns: Sequence[int], path: Path) -> Path:
    """The std of d(loss)/d(output) of each chosen site against its depth, at the first and last row."""
    fig, ax = pyplot().subplots(figsize=(per_site_width(len(columns)), 4))
    for row, style in ((0, "o-"), (run.rows - 1, "s--")):
        values = positive(np.asarray(run.grad_stats["std"][row])[list(columns)])
        ax.plot(np.arange(len(columns)), values, style, ms=3, label=f"step {int(run.step[row])}")
    ax.set_yscale("log")
    site_ticks(ax, [figure_label(run.sites[c]) for c in columns])
    ax.set_ylabel("std of d(loss)/d(output) (log)")
    ax.set_title(figure_label(f"{run.path.name}: gradient std per layer (input side left)"), fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def update_ratios(run: Run, path: Path) -> Path:
    """Each parameter's update-to-data ratio std(Δw)/std(w) against step (log), the band of the update-ratio
    rule's default thresholds shaded."""
    ratio = run.update_ratio()
    rows = _rows(run.rows)
    fig, ax = pyplot().subplots(figsize=(8, 4.2))
    ax.axhspan(*RATIO_BAND, color="green", alpha=0.08, lw=0)
    chosen = set(labelled_indices(len(run.params)))
    for k, name in enumerate(run.params):
        ax.plot(run.step[rows], positive(ratio[rows, k]), lw=1.0 if k in chosen else 0.5, color=None if k in chosen else "0.75",
                label=figure_label(name) if k in chosen else "_nolegend_", zorder=2 if k in chosen else 1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("std(Δw) / std(w)")
    ax.set_title(figure_label(f"{run.path.name}: update-to-data ratio per parameter (band: "
                              f"{RATIO_BAND[0]:g} … {RATIO_BAND[1]:g}, where diagnose stays quiet)"), fontsize=9)
    ax.legend(fontsize=6, ncol=2 if len(chosen) > 6 else 1)
    return save_figure(fig, path)


def histogram_images(run: Run, columns: Sequence[int], group: str, path: Path) -> Path:
    """One panel per site (at most MAX_HIST_PANELS): x the histogram rows' steps, y the bins, colour log10(1 + count)."""
    hist = run.hist
    assert hist is not None
    shown = [columns[i] for i in labelled_indices(len(columns), MAX_HIST_PANELS)]
    rows = _rows(len(hist.step))
    counts = hist.counts(group, rows, sorted(shown))  # (rows, sites, bins)
    order = {c: k for k, c in enumerate(sorted(shown))}
    across = min(4, len(shown))
    down = -(-len(shown) // across)
    plt = pyplot()
    fig, axes = plt.subplots(down, across, figsize=(3.4 * across, 2.6 * down), squeeze=False)
    bins = len(hist.edges) - 1
    ticks = [k for k, edge in enumerate(hist.edges[1:-1], start=1) if abs(edge) in (1e-6, 1e-3, 1.0, 1e3, 1e6)]
    steps = hist.step[rows]
    for ax, column in zip(axes.flat, shown):
        image = np.log10(1.0 + counts[:, order[column], :].T)
        ax.imshow(image, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                  extent=(float(steps[0]), float(steps[-1]) if len(steps) > 1 else float(steps[0]) + 1, 0, bins))
        ax.set_yticks(ticks, [f"{hist.edges[k]:g}" for k in ticks], fontsize=6)
        ax.set_title(site_label(run, column), fontsize=7)  # site_label made it a safe label already
        ax.tick_params(axis="x", labelsize=6)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    what = "gradients" if group == "grad_counts" else "outputs"
    fig.suptitle(figure_label(f"{run.path.name}: histograms of the {what} (log10(1 + count); y: bin edges)"),
                 fontsize=9)
    return save_figure(fig, path)
