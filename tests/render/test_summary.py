"""The run summary: flags against hand-made statistics, the exact rendered text, and `actprobe show`."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

import actprobe
from actprobe.cli import app
from actprobe.runfile.format import STATISTICS
from actprobe.runfile.reader import Run
from actprobe.analysis.summary import Thresholds, summarize
from actprobe.render.summary import render_summary

from conftest import bad_files as _bad_files, truncated_copy as _truncated

STAT_ORDER = ("mean", "std", "near_zero", "dead", "nonfinite")


def hand_run(rows: dict[int, list[tuple[float, ...]]], kinds: list[str], scalars=None) -> Run:
    """A Run whose statistics are given row by row: (mean, std, near_zero, dead, nonfinite) per site."""
    n_rows, n_sites = len(rows), len(kinds)
    stats = {name: np.zeros((n_rows, n_sites), np.float32) for name in STATISTICS}
    for row, values in rows.items():
        for s, site_values in enumerate(values):
            for name, value in zip(STAT_ORDER, site_values):
                stats[name][row, s] = value
    sites = ["conv", "relu", "deep", "out"][:n_sites]
    return Run(path=Path("runs/demo.h5"),
               attrs={"format": "actprobe", "format_version": 1, "model_file": "m.py", "mode": "train",
                      "device": "cpu", "seed": 0, "data_source": "hand-made"},
               sites=sites, site_module_types=kinds, site_unit_dims=np.ones(n_sites, np.int8),
               step=np.arange(n_rows) * 10, time=np.linspace(0.0, 2.5, n_rows), stats=stats,
               scalars=scalars if scalars is not None else {"loss": np.linspace(2.5, 0.75, n_rows)})


DEMO = hand_run({
    0: [(0.01, 1.0, 0.04, 0, 0), (0.4, 0.58, 0.5, 0, 0), (0.001, 0.05, 0.8, 0, 0), (0.2, 20.0, 0, 0, 0)],
    1: [(-0.02, 1.0, 0.03, 0, 0), (0.1, 0.5, 0.2, 0.25, 0), (0.3, 0.5, 0.3, 0, 0), (0.0, 1.0, 0, 0, 0.001)],
}, ["Conv2d", "ReLU", "Conv2d", "Linear"])

EXPECTED = """\
runs/demo.h5: 2 recorded steps (0..10), 4 sites, 2.5 s
model_file m.py, mode train, device cpu, seed 0
data: hand-made
loss: 2.5 at step 0 → 0.75 at step 10
activations, step 0 → 10
┏━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ site ┃ module ┃         mean ┃        std ┃ near-zero ┃     dead ┃ flags                                    ┃
┡━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ conv │ Conv2d │ 0.01 → -0.02 │      1 → 1 │   4% → 3% │  0% → 0% │                                          │
│ relu │ ReLU   │    0.4 → 0.1 │ 0.58 → 0.5 │ 50% → 20% │ 0% → 25% │ mean +0.69σ (first), dead 25% (last)     │
│ deep │ Conv2d │  0.001 → 0.3 │ 0.05 → 0.5 │ 80% → 30% │  0% → 0% │ std ×0.05 (first), near-zero 80% (first) │
│ out  │ Linear │      0.2 → 0 │     20 → 1 │   0% → 0% │  0% → 0% │ std ×20 (first), NaN/Inf 0.1% (last)     │
└──────┴────────┴──────────────┴────────────┴───────────┴──────────┴──────────────────────────────────────────┘
6 flags at 3 of 4 sites
flags: std ×r = std relative to the first site (below ×0.1 or above ×10); mean kσ after a ReLU-like module (|k| > 0.5); near-zero
> 50%; dead > 10%; any NaN/Inf. (first)/(last): only at that step.
"""


def render(summary, width: int = 130) -> str:
    buffer = io.StringIO()
    render_summary(summary, Console(file=buffer, width=width, color_system=None))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def test_summary_renders_exactly():
    assert render(summarize(DEMO)) == EXPECTED


def test_flags_name_code_severity_and_step():
    summary = summarize(DEMO)
    flags = {site.name: [(f.code, f.severity, f.when) for f in site.flags] for site in summary.sites}
    assert flags == {
        "conv": [],
        "relu": [("mean-shift", "warning", "first"), ("dead", "error", "last")],
        "deep": [("std-collapse", "warning", "first"), ("near-zero", "warning", "first")],
        "out": [("std-explosion", "warning", "first"), ("non-finite", "error", "last")],
    }
    assert summary.flag_count == 6


@pytest.mark.parametrize("site, kind, flagged", [
    ((0.0, 0.0999, 0, 0, 0), "Conv2d", {"std-collapse"}),
    ((0.0, 0.1001, 0, 0, 0), "Conv2d", set()),
    ((0.0, 10.01, 0, 0, 0), "Conv2d", {"std-explosion"}),
    ((0.51, 1.0, 0, 0, 0), "ReLU", {"mean-shift"}),
    ((0.51, 1.0, 0, 0, 0), "GELU", {"mean-shift"}),
    ((0.49, 1.0, 0, 0, 0), "ReLU", set()),
    ((0.9, 1.0, 0, 0, 0), "Conv2d", set()),  # a mean shift counts only after ReLU-like modules
    ((0.0, 1.0, 0.51, 0, 0), "Conv2d", {"near-zero"}),
    ((0.0, 1.0, 0.5, 0.1, 0), "Conv2d", set()),  # thresholds are strict: 50% and 10% pass
    ((0.0, 1.0, 0, 0.11, 0), "Conv2d", {"dead"}),
    ((0.0, 1.0, 0, 0, 1e-7), "Conv2d", {"non-finite"}),
])
def test_each_flag_and_its_threshold(site, kind, flagged):
    run = hand_run({0: [(0.0, 1.0, 0, 0, 0), site]}, ["Conv2d", kind])
    assert {f.code for f in summarize(run).sites[1].flags} == flagged
    assert not summarize(run).sites[0].flags


def test_thresholds_are_adjustable():
    run = hand_run({0: [(0.0, 1.0, 0, 0, 0), (0.0, 0.2, 0.3, 0, 0)]}, ["Conv2d", "Conv2d"])
    assert not summarize(run).sites[1].flags
    strict = summarize(run, Thresholds(collapse=0.5, near_zero=0.25))
    assert {f.code for f in strict.sites[1].flags} == {"std-collapse", "near-zero"}


def test_one_row_shows_one_value_per_cell():
    run = hand_run({0: [(0.5, 2.0, 0.1, 0, 0)]}, ["Linear"], scalars={})
    text = render(summarize(run))
    assert "activations, step 0\n" in text and "│ conv │ Linear │  0.5 │   2 │       10% │   0% │       │" in text
    assert text.endswith("no flags\n")


# -- actprobe show on real files --------------------------------------------------------------------------
def _paper_like_file(path: Path, init: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(64, 64), nn.ReLU())])
    if init == "kaiming":
        for module in model:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
    with actprobe.Probe(model, path) as probe:
        for _ in range(3):
            model(torch.randn(256, 64)).sum().backward()
            probe.step()


def test_show_flags_the_default_init_and_not_kaiming(tmp_path):
    _paper_like_file(tmp_path / "default.h5", "default")
    _paper_like_file(tmp_path / "kaiming.h5", "kaiming")
    default = summarize(actprobe.read(tmp_path / "default.h5"))
    kaiming = summarize(actprobe.read(tmp_path / "kaiming.h5"))
    codes = lambda s: {f.code for site in s.sites for f in site.flags}  # noqa: E731
    assert "std-collapse" in codes(default) and "std-collapse" not in codes(kaiming)
    result = CliRunner().invoke(app, ["show", str(tmp_path / "default.h5")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert render(default, width=200).splitlines()[4:] == [line.rstrip() for line in result.stdout.splitlines()][4:]
    assert "still being written" not in result.stdout


def test_show_a_file_that_is_still_being_written(tmp_path):
    path = tmp_path / "live.h5"
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with actprobe.Probe(model, path) as probe:
        for _ in range(3):
            model(torch.randn(8, 4)).sum().backward()
            probe.step()
        probe.flush(wait=True)
        result = CliRunner().invoke(app, ["show", str(path)], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert f"{path}: 3 recorded steps (0..2), 2 sites" in result.stdout
        assert "still being written" in result.stdout
    result = CliRunner().invoke(app, ["show", str(path)], env={"COLUMNS": "200"})
    assert "still being written" not in result.stdout


@pytest.mark.parametrize("kind", ["missing", "text", "other", "newer", "folder", "truncated"])
def test_show_bad_files(tmp_path, kind):
    if kind == "truncated":
        good = tmp_path / "good.h5"
        _paper_like_file(good, "default")
        path, message = _truncated(good, tmp_path), "cut.h5"
    else:
        path, message = _bad_files(tmp_path)[kind]
    result = CliRunner().invoke(app, ["show", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output
