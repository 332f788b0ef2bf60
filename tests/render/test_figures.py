"""The figures, checked through the matplotlib objects drawn from run files that the Probe recorded
on small real models: log-scaled std axes, legends naming site and module type, at most 12
coloured sites, markers at non-finite steps, run names in every compare legend; and real PNGs."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.analysis.compare import choose_rows, match_sites
from actprobe.render import figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 6
NAN_FROM = 3  # the NaN model's input is NaN from this step on


class Small(nn.Module):
    """features.0 (Linear) … features.3 (ReLU), a zeroed Linear (std exactly 0), head (Linear)."""

    def __init__(self, nan_from: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
        self.zeroed = nn.Linear(8, 8)
        nn.init.zeros_(self.zeroed.weight)
        nn.init.zeros_(self.zeroed.bias)
        self.head = nn.Linear(8, 2)
        self.nan_from, self.calls = nan_from, 0

    def forward(self, x):
        if self.nan_from is not None and self.calls >= self.nan_from:
            x = x * float("nan")
        self.calls += 1
        h = self.features(x)
        return self.head(h + self.zeroed(h))


SMALL_LABELS = ["features.0 (Linear)", "features.1 (ReLU)", "features.2 (Linear)", "features.3 (ReLU)",
                "zeroed (Linear)", "head (Linear)"]


def record(path: Path, model: nn.Module, seed: int = 0) -> actprobe.Run:
    gen = torch.Generator().manual_seed(seed)
    with actprobe.Probe(model, path) as probe:
        for _ in range(STEPS):
            model(torch.randn(16, 8, generator=gen))
            probe.step()
    return actprobe.read(path)


def deep(layers: int = 15) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(8, 8), nn.ReLU())])


@pytest.fixture
def plt():
    plt = figures.pyplot()
    yield plt
    plt.close("all")


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def labelled_lines(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def markers(ax) -> list:
    return [line for line in ax.get_lines() if line.get_label() == figures.NONFINITE_LABEL]


def test_labelled_sites_are_evenly_spaced_along_depth_with_first_and_last():
    assert figures.labelled_indices(5) == [0, 1, 2, 3, 4]
    assert figures.labelled_indices(12) == list(range(12))
    # linspace(0, 29, 12) = 0, 2.64, 5.27, 7.91, 10.55, 13.18, 15.82, 18.45, 21.09, 23.73, 26.36, 29
    assert figures.labelled_indices(30) == [0, 3, 5, 8, 11, 13, 16, 18, 21, 24, 26, 29]


def test_std_axis_is_log_and_legends_name_site_and_module_type(tmp_path, plt):
    run = record(tmp_path / "small.h5", Small())
    assert run.site_module_types == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "Linear"]
    fig, axes = plt.subplots(1, 2)
    figures.run_panels(axes, run, range(len(run.sites)))
    assert axes[0].get_yscale() == "linear" and axes[1].get_yscale() == "log"
    for ax in axes:
        assert legend_texts(ax) == SMALL_LABELS and not markers(ax)
    with h5py.File(tmp_path / "small.h5") as f:
        std = f["stats/std"][:]
    zeroed = SMALL_LABELS.index("zeroed (Linear)")
    assert np.all(std[:, zeroed] == 0) and np.all(std[:, :zeroed] > 0)
    drawn = {line.get_label(): np.asarray(line.get_ydata(), float) for line in axes[1].get_lines()}
    assert np.all(np.isnan(drawn["zeroed (Linear)"])), "std 0 has no place on a log axis"
    np.testing.assert_allclose(drawn["features.3 (ReLU)"], std[:, 3], rtol=1e-6)


def test_thirty_sites_draw_twelve_in_colour_and_the_rest_grey(tmp_path, plt):
    run = record(tmp_path / "deep.h5", deep(15))
    assert len(run.sites) == 30
    fig, axes = plt.subplots(1, 2)
    figures.run_panels(axes, run, range(30))
    want = [f"{i} ({'Linear' if i % 2 == 0 else 'ReLU'})" for i in (0, 3, 5, 8, 11, 13, 16, 18, 21, 24, 26, 29)]
    grey_columns = [c for c in range(30) if f"{c} ({'Linear' if c % 2 == 0 else 'ReLU'})" not in want]
    for ax, stat in zip(axes, ("mean", "std")):
        assert labelled_lines(ax) == want
        (grey,) = [line for line in ax.get_lines() if line.get_color() == figures.GREY]  # one artist for all
        x, y = np.asarray(grey.get_xdata(), float), np.asarray(grey.get_ydata(), float)
        pieces = np.split(y, np.flatnonzero(np.isnan(x)))  # NaN in x separates two sites
        pieces = [piece[~np.isnan(piece)] for piece in pieces if np.isfinite(piece).any()]
        assert len(pieces) == 18
        for piece, column in zip(pieces, grey_columns):
            np.testing.assert_allclose(piece, run.stats[stat][:, column], rtol=1e-6)
        assert legend_texts(ax) == want + ["18 other sites (grey)"]


def test_nonfinite_steps_get_a_marker_at_the_top(tmp_path, plt):
    run = record(tmp_path / "nan.h5", Small(nan_from=NAN_FROM))
    fig, axes = plt.subplots(1, 2)
    figures.run_panels(axes, run, range(len(run.sites)))
    for ax in axes:
        [marker] = markers(ax)
        assert list(marker.get_xdata()) == list(range(NAN_FROM, STEPS)) and marker.get_marker() == "x"
        assert np.all(np.asarray(marker.get_ydata()) <= 1)  # axes fraction: at the top, whatever the data
        assert legend_texts(ax)[-1] == figures.NONFINITE_LABEL


def test_layer_panels_log_std_type_in_legend_and_markers(tmp_path, plt):
    run = record(tmp_path / "nan.h5", Small(nan_from=NAN_FROM))
    fig, axes = plt.subplots(1, 2)
    figures.layer_panels(axes, "default", run)
    assert axes[1].get_yscale() == "log" and axes[0].get_yscale() == "linear"
    assert legend_texts(axes[1]) == ["layer 1: features.1 (ReLU)", "layer 2: features.3 (ReLU)",
                                     figures.NONFINITE_LABEL]
    assert list(markers(axes[0])[0].get_xdata()) == list(range(NAN_FROM, STEPS))


def test_compare_of_three_runs_names_every_run(tmp_path, plt):
    runs = [record(tmp_path / f"{name}.h5", Small(), seed) for seed, name in enumerate("abc")]
    matching = match_sites(runs)
    fig, axes = plt.subplots(1, 3)
    figures.compare_panels(axes, runs, matching, choose_rows(runs, "last").rows)
    names = ["A: a.h5", "B: b.h5", "C: c.h5"]
    for ax in axes[:2]:
        texts = legend_texts(ax)
        assert texts == ["features.1 (ReLU)", "features.3 (ReLU)"] + names
    assert axes[1].get_yscale() == "log"
    assert [t.split(" (step")[0] for t in legend_texts(axes[2])] == names


def test_near_zero_panel_reads_the_row_asked_for(tmp_path, plt):
    runs = {"small": record(tmp_path / "small.h5", Small())}
    with h5py.File(tmp_path / "small.h5") as f:
        near_zero = 100 * f["stats/near_zero"][:, [1, 3]].astype(np.float64)
    assert not np.allclose(near_zero[0], near_zero.mean(0))
    for row, want, when in ((0, near_zero[0], "at step 0"), (None, near_zero.mean(0), "average")):
        fig, ax = plt.subplots()
        figures.near_zero_panel(ax, runs, row)
        np.testing.assert_allclose([bar.get_height() for bar in ax.patches], want, rtol=1e-5)
        assert when in ax.get_ylabel()


def test_every_figure_writes_a_png(tmp_path):
    small = record(tmp_path / "small.h5", Small(nan_from=NAN_FROM))
    other = record(tmp_path / "other.h5", Small(), seed=1)
    out = tmp_path / "figs"
    written = figures.plot_run(small, range(len(small.sites)), out, "small")
    written.append(figures.plot_compare([small, other], match_sites([small, other]), (0, 0), out / "cmp.png"))
    written.append(figures.layer_lines({"nan": small, "ok": other}, "layers", out / "layers.png"))
    written.append(figures.near_zero_bars({"nan": small, "ok": other}, "nz", out / "nz.png", row=0))
    written.append(figures.experiment_panels([("x", small, 3), ("y", other, 3)], out / "exp.png"))
    written.append(figures.depth_curves([("m", np.array([1.0, 0.0, 0.1]), np.array([1.0, 0.5, 0.25]))],
                                        "eq4", out / "depth.png"))
    assert len(written) == 7
    for path in written:
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
