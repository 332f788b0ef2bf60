"""Every figure actprobe draws, from run files (matplotlib, Agg backend: files, never windows).

``actprobe plot`` and ``actprobe compare --figure`` draw ``plot_run`` and ``plot_compare``; the
recipes draw the WIB-ReLU paper's figures from their own run files with the functions below them.
Every public function returns the PNG paths it wrote; the ``*_panels`` functions draw onto axes
they are given, so that tests can inspect what was drawn.

Every panel of per-site lines goes through ``draw_sites``: a std axis is logarithmic (a ×10
collapse is one decade), at most ``MAX_LABELLED`` sites get a colour and a legend entry naming
the site and its module type, and steps with non-finite values get a red × at the top.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.compare import MatchedSite, Matching
from ..analysis.roles import activation_sites, mean_over_steps
from ..analysis.series import Series, series
from ..runfile.format import NEAR_ZERO_EPS
from ..runfile.reader import Run
from .text import figure_label

DPI = 90
RECIPE_DPI = 80
LINESTYLES = ("-", "--", ":", "-.")
MAX_LABELLED = 12  # coloured, labelled site lines per panel; the rest are drawn grey
GREY = "0.78"
NONFINITE_LABEL = "non-finite values"


@dataclass(frozen=True)
class SiteLine:
    """One site of a panel, drawn once per run: ``points[r]`` is its ``(run, column)`` in run r."""

    label: str
    points: tuple[tuple[Run, int], ...]


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: files, never windows. A matplotlib installed without its
    STIX and Computer Modern fonts falls back to DejaVu Sans for the log axes' labels; it says so in
    a dozen ``findfont`` lines on every run, which are kept out of the user's terminal."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    return plt


def _colors(count: int) -> list[Any]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if count <= 10 else "viridis")
    return [cmap(i if count <= 10 else i / max(count - 1, 1)) for i in range(count)]


_KEPT: ContextVar[list[Any] | None] = ContextVar("actprobe_kept_figures", default=None)


def save_figure(fig: Any, path: Path, dpi: int = DPI) -> Path:
    """Lay out, write as PNG (creating the folder) and close ``fig``; inside ``kept_figures()``, keep it
    open instead (labelled with the file name it would have had) and write nothing."""
    fig.tight_layout()
    kept = _KEPT.get()
    if kept is not None:
        fig.set_label(path.stem)
        kept.append(fig)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


@contextmanager
def kept_figures() -> Iterator[list[Any]]:
    """The figures drawn inside the block, open, instead of PNG files (``actprobe.plot``)."""
    figures: list[Any] = []
    token = _KEPT.set(figures)
    try:
        yield figures
    finally:
        _KEPT.reset(token)


# -- per-site lines: the one helper every such panel uses ----------------------------------------
def site_label(run: Run, column: int) -> str:
    """``features.3 (ReLU)``: the site's name and its module's class, safe for matplotlib."""
    return figure_label(f"{run.sites[column]} ({run.site_module_types[column]})")


def labelled_indices(count: int, limit: int = MAX_LABELLED) -> list[int]:
    """Which of ``count`` sites (in depth order) get a colour and a legend entry: all of them up to
    ``limit``, else ``limit`` evenly spaced along depth, the first and the last always among them."""
    if count <= limit:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, limit)})


def positive(values: np.ndarray) -> np.ndarray:
    """A copy with NaN for every value ≤ 0: a log axis has no place for them (std 0: a constant output)."""
    values = np.array(values, dtype=np.float64)
    values[~(values > 0)] = np.nan
    return values


def draw_sites(ax: Any, stat: str, lines: Sequence[SiteLine], *, by_row: bool = False,
               run_names: Sequence[str] = (), reads: SeriesReads | None = None) -> list[Any]:
    """Draw ``stat`` of each site against step (or, with ``by_row``, against row 1..T), line style
    per run, and return the legend handles: the coloured sites (see ``labelled_indices``), one
    "N other sites (grey)", one "non-finite values", and one per name in ``run_names``. ``reads``:
    the figure's ``SeriesReads`` when several panels draw the same lines."""
    from matplotlib.lines import Line2D

    reads = reads or SeriesReads(lines)
    chosen = labelled_indices(len(lines))
    colors = dict(zip(chosen, _colors(len(chosen))))
    handles, bad = [], []
    for i in chosen:
        first, steps = _draw_line(ax, stat, lines[i], {"color": colors[i], "lw": 1.0, "zorder": 2}, by_row, reads,
                                  marked=True)
        bad.append(steps)
        first.set_label(lines[i].label)
        handles.append(first)
    bad += _draw_grey(ax, stat, [line for i, line in enumerate(lines) if i not in colors], by_row, reads)
    if len(lines) > len(chosen):
        handles.append(Line2D([], [], color=GREY, lw=1, label=f"{len(lines) - len(chosen)} other sites (grey)"))
    handles += _mark_nonfinite(ax, np.concatenate(bad) if bad else np.zeros(0))
    handles += [Line2D([], [], color="black", lw=1, ls=LINESTYLES[r % len(LINESTYLES)], label=figure_label(name))
                for r, name in enumerate(run_names)]
    if stat == "std":
        ax.set_yscale("log")
    return handles


def _draw_grey(ax: Any, stat: str, lines: Sequence[SiteLine], by_row: bool, reads: SeriesReads) -> list[np.ndarray]:
    """The unlabelled sites, grey: one line per run (line style) through all of them, NaN between two
    sites, so that hundreds of sites cost one artist, not hundreds. Returns their non-finite x."""
    pieces: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    bad = []
    for line in lines:
        for r, (run, column) in enumerate(line.points):
            data, k = reads.get(run, stat, column)
            x = data.row if by_row else data.step
            xs, ys = pieces.setdefault(r, ([], []))
            xs += [x.astype(np.float64), [np.nan]]
            ys += [_shown(stat, data.mean[:, k]), [np.nan]]
            bad.append(x[data.nonfinite[:, k]])
    for r, (xs, ys) in pieces.items():
        ax.plot(np.concatenate(xs), np.concatenate(ys), ls=LINESTYLES[r % len(LINESTYLES)], color=GREY, lw=0.5,
                zorder=1, label="_nolegend_")
    return bad


def _shown(stat: str, values: np.ndarray) -> np.ndarray:
    return positive(values) if stat == "std" else values


def _draw_line(ax: Any, stat: str, line: SiteLine, style: dict[str, Any], by_row: bool, reads: SeriesReads,
               marked: bool) -> tuple[Any, np.ndarray]:
    """One site in each run; returns the first run's line and the x of its non-finite steps. A long
    run is drawn decimated (``analysis.series``): the bucket means, and their min–max envelope shaded."""
    drawn, bad = [], []
    for r, (run, column) in enumerate(line.points):
        data, k = reads.get(run, stat, column)
        x = data.row if by_row else data.step
        drawn += ax.plot(x, _shown(stat, data.mean[:, k]), ls=LINESTYLES[r % len(LINESTYLES)],
                         marker="." if marked and run.rows < 30 else None, label="_nolegend_", **style)
        if data.decimated and marked:
            ax.fill_between(x, _shown(stat, data.low[:, k]), _shown(stat, data.high[:, k]), color=style["color"],
                            alpha=0.15, lw=0, label="_nolegend_")
        bad.append(x[data.nonfinite[:, k]])
    return drawn[0], np.concatenate(bad)


class SeriesReads:
    """The series of one figure's lines, read once per run and statistic for all their columns; the
    non-finite buckets of a run are read once for all its statistics (the mean and the std panel)."""

    def __init__(self, lines: Sequence[SiteLine]) -> None:
        self._columns: dict[int, list[int]] = {}
        for line in lines:
            for run, column in line.points:
                self._columns.setdefault(id(run), []).append(column)
        self._read: dict[tuple[int, str], tuple[Series, dict[int, int]]] = {}
        self._nonfinite: dict[int, np.ndarray] = {}

    def get(self, run: Run, stat: str, column: int) -> tuple[Series, int]:
        """``stat`` of ``run`` for every column of the figure, and where ``column`` is in it."""
        kept = self._read.get((id(run), stat))
        if kept is None:
            columns = sorted(set(self._columns.get(id(run), [column])))
            data = series(run, stat, columns, nonfinite=self._nonfinite.get(id(run)))
            self._nonfinite[id(run)] = data.nonfinite
            kept = self._read[(id(run), stat)] = (data, {c: k for k, c in enumerate(columns)})
        return kept[0], kept[1][column]


def _mark_nonfinite(ax: Any, x: np.ndarray) -> list[Any]:
    """A red × at the top of the axes (x: data, y: axes fraction) above each step in ``x``."""
    if not len(x):
        return []
    steps = np.unique(x)
    return ax.plot(steps, np.full(len(steps), 0.97), transform=ax.get_xaxis_transform(), ls="none",
                   marker="x", ms=5, color="red", clip_on=False, zorder=3, label=NONFINITE_LABEL)


BEST_LEGEND_POINTS = 20_000  # above this many drawn points, "best" placement costs seconds: fixed corner


def _legend(ax: Any, handles: Sequence[Any]) -> None:
    if handles:
        points = sum(len(line.get_xdata()) for line in ax.get_lines())
        ax.legend(handles=list(handles), fontsize=6, loc="best" if points <= BEST_LEGEND_POINTS else "upper right",
                  ncol=2 if len(handles) > 8 else 1)


# -- actprobe plot and actprobe compare --figure -------------------------------------------------
def plot_run(run: Run, columns: Sequence[int], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>-mean-std.png`` (per-layer mean and std against step, as in the paper's Fig. 7, 9, 11) and
    ``<stem>-near-zero.png`` (near-zero % per layer at the first and last recorded step, Fig. 8, 10)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    run_panels(axes, run, columns)
    fig.suptitle(figure_label(run.path.name), fontsize=9)
    written = [save_figure(fig, out_dir / f"{stem}-mean-std.png")]
    fig, ax = plt.subplots(figsize=(per_site_width(len(columns)), 4))
    x = np.arange(len(columns))
    for k, (row, label) in enumerate(((0, "first"), (run.rows - 1, "last"))):
        values = 100 * run.stats["near_zero"][row, columns].astype(np.float64)
        ax.bar(x + (k - 0.5) * 0.4, values, 0.4, label=f"{label} recorded step ({int(run.step[row])})")
    _percent_by_site(ax, [figure_label(run.sites[c]) for c in columns])
    ax.set_ylabel(f"near-zero (|x| ≤ {run.attrs.get('near_zero_eps', NEAR_ZERO_EPS)}) %")
    ax.set_title(figure_label(f"{run.path.name}: near-zero activations per layer"), fontsize=9)
    ax.legend(fontsize=7)
    written.append(save_figure(fig, out_dir / f"{stem}-near-zero.png"))
    return written


def run_panels(axes: Sequence[Any], run: Run, columns: Sequence[int]) -> None:
    """``plot_run``'s left figure: mean (``axes[0]``) and std (``axes[1]``) of ``columns`` against step."""
    lines = [SiteLine(site_label(run, c), ((run, c),)) for c in columns]
    reads = SeriesReads(lines)
    for ax, stat in zip(axes, ("mean", "std")):
        _legend(ax, draw_sites(ax, stat, lines, reads=reads))
        ax.set_title(f"{stat} per layer" + (" (log scale)" if stat == "std" else ""), fontsize=9)
        ax.set_xlabel("step")


MAX_BAR_INCHES = 28  # the near-zero bar figure grows with the sites up to this width (≈ MAX_TICK_LABELS names)
MAX_TICK_LABELS = 60  # a bar panel names at most this many sites (every k-th one beyond)


def per_site_width(sites: int) -> float:
    """Inches of a figure with one x position per site: it grows with the sites, up to MAX_BAR_INCHES."""
    return min(MAX_BAR_INCHES, max(6, 0.45 * sites + 2))


def site_ticks(ax: Any, labels: Sequence[str]) -> None:
    """One x tick per site, named ``labels`` (every k-th one when there are more than MAX_TICK_LABELS)."""
    tilted = len(labels) > 6
    every = -(-len(labels) // MAX_TICK_LABELS) if labels else 1
    ticks = np.arange(0, len(labels), every)
    ax.set_xticks(ticks, [labels[t] for t in ticks], rotation=45 if tilted else 0,
                  ha="right" if tilted else "center", fontsize=7)
    if every > 1:
        ax.set_xlabel(f"sites (one in {every} named)", fontsize=7)


def _percent_by_site(ax: Any, labels: Sequence[str]) -> None:
    """A bar panel's axes: ``site_ticks``; y from 0 to 100 %."""
    site_ticks(ax, labels)
    ax.set_ylim(0, 100)


def plot_compare(runs: Sequence[Run], matching: Matching, rows: Sequence[int], path: Path) -> Path:
    """Overlay of the runs: per-layer mean and std against step (colour: layer, line style: run), and
    near-zero % per layer at the compared step (bars: runs)."""
    fig, axes = pyplot().subplots(1, 3, figsize=(15, 4.2))
    compare_panels(axes, runs, matching, rows)
    return save_figure(fig, path)


def compare_panels(axes: Sequence[Any], runs: Sequence[Run], matching: Matching, rows: Sequence[int]) -> None:
    """``plot_compare``'s three panels; every legend names the runs (``A: a.h5``, ``B: b.h5``, …)."""
    sites = [s for s in matching.sites if s.role == "activation"] or list(matching.sites)
    names = [f"{_tag(r)}: {run.path.name}" for r, run in enumerate(runs)]
    lines = [SiteLine(_matched_label(site, runs), tuple(zip(runs, site.columns))) for site in sites]
    reads = SeriesReads(lines)
    for ax, stat in zip(axes[:2], ("mean", "std")):
        _legend(ax, draw_sites(ax, stat, lines, run_names=names, reads=reads))
        ax.set_title(f"{stat} per layer; colour = layer, line style = run", fontsize=9)
        ax.set_xlabel("step")
    ax = axes[2]
    width = 0.8 / len(runs)
    for r, run in enumerate(runs):
        values = [100 * float(run.stats["near_zero"][rows[r], s.columns[r]]) for s in sites]
        ax.bar(np.arange(len(sites)) + (r - (len(runs) - 1) / 2) * width, values, width,
               label=figure_label(f"{names[r]} (step {int(run.step[rows[r]])})"))
    _percent_by_site(ax, [figure_label(s.label) for s in sites])
    ax.set_title("near-zero % per layer", fontsize=9)
    ax.legend(fontsize=7)


def _matched_label(site: MatchedSite, runs: Sequence[Run]) -> str:
    """``act1 (ReLU)``; ``act1 ↔ 1 (WIBReLU/ReLU)`` when matched by position across module types."""
    kinds = dict.fromkeys(run.site_module_types[c] for run, c in zip(runs, site.columns))
    return figure_label(f"{site.label} ({'/'.join(kinds)})")


def _tag(r: int) -> str:
    return chr(ord("A") + r) if r < 26 else str(r)


# -- the recipes' figures, in the manner of the WIB-ReLU paper's ---------------------------------
def experiment_panels(panels: Sequence[tuple[str, Run, int]], path: Path) -> Path:
    """Fig. 3–5: one row per ``(title, run, column)``, the column's mean and std against experiment."""
    fig, axes = pyplot().subplots(len(panels), 2, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for row, (title, run, column) in enumerate(panels):
        for ax, stat in zip(axes[row], ("mean", "std")):
            _legend(ax, draw_sites(ax, stat, [SiteLine(site_label(run, column), ((run, column),))], by_row=True))
            ax.set_title(f"{title}: {stat}", fontsize=8)
            ax.set_xlabel("experiment", fontsize=8)
            ax.tick_params(labelsize=7)
    return save_figure(fig, path, RECIPE_DPI)


def depth_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str, path: Path) -> Path:
    """Eq. 4: per ``(label, measured, theory)``, the std per layer on a log scale (dashed: theory)."""
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for label, measured, theory in curves:
        layers = np.arange(1, len(measured) + 1)
        line = ax.plot(layers, positive(measured), marker="o", ms=3, label=label)[0]
        ax.plot(layers, positive(theory), ls="--", lw=0.8, color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("std of the layer's output (median)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path, RECIPE_DPI)


def layer_lines(runs: Mapping[str, Run], title: str, path: Path) -> Path:
    """Per-layer mean and std of the activation outputs against step; one row of panels per run."""
    fig, axes = pyplot().subplots(len(runs), 2, figsize=(9, 2.1 * len(runs)), squeeze=False, sharex=True)
    for row, (label, run) in enumerate(runs.items()):
        layer_panels(axes[row], label, run)
    for ax in axes[-1]:
        ax.set_xlabel("iteration", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, RECIPE_DPI)


def layer_panels(axes: Sequence[Any], label: str, run: Run) -> None:
    """One row of ``layer_lines``: the activations' mean (``axes[0]``) and std (``axes[1]``, with the legend)."""
    lines = [SiteLine(f"layer {k}: {site_label(run, c)}", ((run, c),)) for k, c in enumerate(activation_sites(run), 1)]
    reads = SeriesReads(lines)
    for ax, stat in zip(axes, ("mean", "std")):
        handles = draw_sites(ax, stat, lines, reads=reads)
        ax.axhline(0.0 if stat == "mean" else 1.0, color="grey", lw=0.5, ls=":")
        ax.set_title(f"{label}: {stat}", fontsize=8)
        ax.tick_params(labelsize=7)
        if stat == "std":
            _legend(ax, handles)


def near_zero_bars(runs: Mapping[str, Run], title: str, path: Path, row: int | None = None) -> Path:
    """Near-zero % of each activation layer, grouped by layer (see ``near_zero_panel``)."""
    fig, ax = pyplot().subplots(figsize=(7, 3.2))
    near_zero_panel(ax, runs, row)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path, RECIPE_DPI)


def near_zero_panel(ax: Any, runs: Mapping[str, Run], row: int | None) -> None:
    """Bars of each run's activation layers: near-zero % at recorded row ``row`` (0: the first), or
    the average over the recorded steps when ``row`` is None; the y label says which."""
    width = 0.8 / max(len(runs), 1)
    for i, (label, run) in enumerate(runs.items()):
        columns = activation_sites(run)
        values = 100 * (mean_over_steps(run, "near_zero", columns) if row is None
                        else run.stats["near_zero"][row, columns].astype(np.float64))
        ax.bar(np.arange(1, len(values) + 1) + (i - (len(runs) - 1) / 2) * width, values, width, label=label)
    when = "average over the recorded steps"
    if row is not None:
        when = "at step " + ", ".join(str(s) for s in sorted({int(run.step[row]) for run in runs.values()}))
    ax.set_xlabel("activation layer")
    ax.set_ylabel(f"near-zero activations (%)\n{when}", fontsize=8)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=6, ncol=3)


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
