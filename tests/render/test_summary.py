"""The run summary: flags against hand-made statistics, the exact rendered text, and `actprobe show`."""

from __future__ import annotations

import dataclasses
import io
import json
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

from conftest import assert_one_line_error, bad_files as _bad_files, truncated_copy as _truncated

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
    1: [(-0.02, 1.0, 0.03, 0, 0), (0.1, 0.5, 0.2, 0.25, 0), (0.3, 0.5, 0.7, 0, 0), (0.0, 1.0, 0, 0, 0.001)],
}, ["Conv2d", "ReLU", "Conv2d", "Linear"])

EXPECTED = """\
runs/demo.h5: 2 recorded steps (0..10), 4 sites, 2.5 s
model_file m.py, mode train, device cpu, seed 0
data: hand-made
loss: 2.5 at step 0 → 0.75 at step 10
activations, step 0 → 10
┏━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ site ┃ module ┃         mean ┃        std ┃ near-zero ┃     dead ┃ flags                         ┃
┡━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ conv │ Conv2d │ 0.01 → -0.02 │      1 → 1 │   4% → 3% │  0% → 0% │                               │
│ relu │ ReLU   │    0.4 → 0.1 │ 0.58 → 0.5 │ 50% → 20% │ 0% → 25% │ mean +0.69σ (first), dead 25% │
│ deep │ Conv2d │  0.001 → 0.3 │ 0.05 → 0.5 │ 80% → 70% │  0% → 0% │ near-zero 80%                 │
│ out  │ Linear │      0.2 → 0 │     20 → 1 │   0% → 0% │  0% → 0% │ NaN/Inf from step 10 (origin) │
└──────┴────────┴──────────────┴────────────┴───────────┴──────────┴───────────────────────────────┘
1 error, 2 warnings at 3 of 4 sites; 1 info
"""


def render(summary, width: int = 130) -> str:
    buffer = io.StringIO()
    render_summary(summary, Console(file=buffer, width=width, color_system=None))
    lines = [line.rstrip() for line in buffer.getvalue().splitlines()]
    return "\n".join(line for line in lines if not line.startswith(LEGEND_PREFIXES)) + "\n"


LEGEND_PREFIXES = ("mean-shift (", "saturation (", "dead-units (", "non-finite (", "vanishing (", "exploding (",
                   "drift (")


def test_summary_renders_exactly():
    assert render(summarize(DEMO)) == EXPECTED


def test_the_legend_names_the_rules_that_fired_with_their_thresholds():
    buffer = io.StringIO()
    render_summary(summarize(DEMO), Console(file=buffer, width=400, color_system=None))
    legend = [line for line in buffer.getvalue().splitlines() if line.startswith(LEGEND_PREFIXES)]
    assert [line.split(" (")[0] for line in legend] == ["mean-shift", "saturation", "dead-units", "non-finite"]
    assert "abs(mean) > 0.5 × std" in legend[0] and "exceeds 0.2; an error above 0.5" in legend[2]


def test_observations_name_rule_severity_and_steps():
    summary = summarize(DEMO)
    seen = {site.name: [(o.rule, o.severity, o.steps) for o in site.observations] for site in summary.sites}
    assert seen == {
        "conv": [],
        "relu": [("mean-shift", "info", (0,)), ("dead-units", "warning", (10,))],
        "deep": [("saturation", "warning", (0, 10))],
        "out": [("non-finite", "error", (10,))],
    }
    assert summary.counts() == {"info": 1, "warning": 2, "error": 1}
    assert [s.name for s in summary.sites if s.flagged] == ["relu", "deep", "out"]


@pytest.mark.parametrize("site, kind, rules", [
    ((0.51, 1.0, 0, 0, 0), "ReLU", {"mean-shift"}),
    ((0.51, 1.0, 0, 0, 0), "GELU", {"mean-shift"}),
    ((0.49, 1.0, 0, 0, 0), "ReLU", set()),
    ((0.9, 1.0, 0, 0, 0), "Conv2d", set()),  # a mean shift counts only after ReLU-like modules
    ((0.0, 1.0, 0.51, 0, 0), "Conv2d", {"saturation"}),
    ((0.0, 1.0, 0.74, 0, 0), "ReLU", set()),  # ReLU zeroes about half by design: 75% for it
    ((0.0, 1.0, 0.76, 0, 0), "ReLU", {"saturation"}),
    ((0.0, 1.0, 0.9, 0, 0), "Dropout", set()),  # passes its input on, zeroing p of it by design
    ((0.0, 1.0, 0.9, 0, 0), "Hardsigmoid", set()),  # a gate
    ((0.0, 1.0, 0.5, 0.2, 0), "Conv2d", set()),  # thresholds are strict: 50% and 20% pass
    ((0.0, 1.0, 0, 0.21, 0), "Conv2d", {"dead-units"}),
    ((0.0, 1.0, 0, 0, 1e-7), "Conv2d", {"non-finite"}),
])
def test_each_rule_and_its_threshold(site, kind, rules):
    """Site 1 of three in a chain (the last, a model output, is judged for less)."""
    run = hand_run({0: [(0.0, 1.0, 0, 0, 0), site, (0.0, 1.0, 0, 0, 0)]}, ["Conv2d", kind, "Linear"])
    assert {o.rule for o in summarize(run).sites[1].observations} == rules
    assert not summarize(run).sites[0].observations


def test_thresholds_are_adjustable():
    run = hand_run({0: [(0.0, 1.0, 0, 0, 0), (0.0, 0.2, 0.3, 0, 0), (0.0, 1.0, 0, 0, 0)]},
                   ["Conv2d", "Conv2d", "Linear"])
    assert not summarize(run).sites[1].observations
    strict = summarize(run, Thresholds(saturation=0.25))
    assert {o.rule for o in strict.sites[1].observations} == {"saturation"}


def test_one_row_shows_one_value_per_cell():
    run = hand_run({0: [(0.5, 2.0, 0.1, 0, 0)]}, ["Linear"], scalars={})
    text = render(summarize(run))
    assert "activations, step 0\n" in text and "│ conv │ Linear │  0.5 │   2 │       10% │   0% │       │" in text
    assert text.endswith("no warnings or errors\n")


def test_pick_flagged_top_and_select():
    summary = summarize(DEMO)
    assert [s.name for s in summary.pick(flagged=True).sites] == ["relu", "deep", "out"]
    assert [s.name for s in summary.pick(top=1).sites] == ["out"]  # the error first
    assert [s.name for s in summary.pick(top=2).sites] == ["relu", "out"]  # then the most observations
    assert [s.name for s in summary.pick(select=["Conv2d"]).sites] == ["conv", "deep"]
    assert [s.name for s in summary.pick(select=["r*", "Linear"]).sites] == ["relu", "out"]
    with pytest.raises(actprobe.OptionError, match="matches no site"):
        summary.pick(select=["Tanh"])
    assert "showing 1 of 4 sites" in render(summary.pick(top=1))


def test_long_names_are_shortened_from_the_left_keeping_what_differs():
    names = [f"encoder.layers.encoder_layer_{i}.mlp.{j}" for i in range(12) for j in (0, 3)]
    run = hand_run({0: [(0.0, 1.0, 0, 0, 0)] * len(names)}, ["Linear"] * len(names), scalars={})
    run = dataclasses.replace(run, sites=names)
    text = render(summarize(run), width=80)
    for i in range(12):
        assert f"│ …encoder_layer_{i}.mlp.0 " in text and f"│ …encoder_layer_{i}.mlp.3 " in text
    assert "encoder…" not in text and "…" not in text.replace("…encoder_layer_", "")


def test_percentages_read_well():
    from actprobe.analysis.rules import percent

    assert [percent(v) for v in (0.0, 1.0, 0.9996, 0.5, 0.004, 0.0004, float("nan"))] == [
        "0%", "100%", "100%", "50%", "0.4%", "<0.1%", "nan"]


def test_public_summary_prints_what_show_prints(tmp_path):
    _paper_like_file(tmp_path / "default.h5", "default")
    report = actprobe.summary(tmp_path / "default.h5")
    buffer = io.StringIO()
    render_summary(report.data, Console(file=buffer, width=120, color_system=None))
    assert str(report) == buffer.getvalue()
    assert "vanishing" in str(report) and report.data.counts()["error"] > 0
    assert json.loads(report.json())["sites_total"] == 12
    flagged = actprobe.summary(actprobe.read(tmp_path / "default.h5"), flagged=True)
    assert all(site.flagged for site in flagged.data.sites)


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
    rules = lambda s: {o.rule for o in s.observations if o.severity != "info"}  # noqa: E731
    assert "vanishing" in rules(default) and rules(kaiming) == set()
    result = CliRunner().invoke(app, ["show", str(tmp_path / "default.h5")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    shown = [line.rstrip() for line in result.stdout.splitlines() if not line.startswith(LEGEND_PREFIXES)]
    assert render(default, width=200).splitlines()[4:] == shown[4:]
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


def test_show_options_flagged_top_select_json_threshold(tmp_path):
    _paper_like_file(tmp_path / "default.h5", "default")
    path = str(tmp_path / "default.h5")
    runner = CliRunner()
    full = json.loads(runner.invoke(app, ["show", path, "--json"]).stdout)
    flagged = json.loads(runner.invoke(app, ["show", path, "--json", "--flagged"]).stdout)
    assert full["sites_total"] == flagged["sites_total"] == 12 and len(full["sites"]) == 12
    assert {s["site"] for s in flagged["sites"]} == {
        s["site"] for s in full["sites"] if any(o["severity"] != "info" for o in s["observations"])}
    top = json.loads(runner.invoke(app, ["show", path, "--json", "--top", "3"]).stdout)
    assert len(top["sites"]) == 3
    relus = json.loads(runner.invoke(app, ["show", path, "--json", "--select", "ReLU"]).stdout)
    assert [s["module_type"] for s in relus["sites"]] == ["ReLU"] * 6
    assert full["counts"]["error"] > 0
    lenient = json.loads(runner.invoke(app, ["show", path, "--json", "--threshold", "vanishing_factor=0.01"]).stdout)
    assert lenient["counts"]["error"] == 0  # the same threshold table as diagnose's
    text = runner.invoke(app, ["show", path, "--flagged"], env={"COLUMNS": "80"}).stdout
    assert "showing" in text and "of 12 sites" in text
    for args, message in ((["--top", "-1"], "--top"), (["--select", "Tanh"], "matches no site"),
                          (["--threshold", "nope=1"], "NAME=VALUE")):
        assert_one_line_error(runner.invoke(app, ["show", path, *args]), message)


def test_pick_takes_one_string_refuses_negative_top_and_zero_shows_all():
    summary = summarize(DEMO)
    assert [s.name for s in summary.pick(select="r*").sites] == ["relu"]
    assert len(summary.pick(top=0).sites) == 4
    with pytest.raises(actprobe.OptionError, match="--top"):
        summary.pick(top=-1)


def test_shortened_names_stay_distinct():
    from actprobe.render.names import shorten

    names = ["encoder.block1_" + "a" * 30 + ".mlp.fc", "encoder.block2_" + "a" * 30 + ".mlp.fc"]
    short = shorten(names, 24)
    assert len(set(short)) == 2 and all(len(s) <= 24 for s in short)


def test_saturation_grown_out_of_is_info_and_says_when_once():
    run = hand_run({0: [(0.0, 1.0, 0, 0, 0), (0.0, 0.05, 0.8, 0, 0), (0.0, 1.0, 0, 0, 0)],
                    1: [(0.0, 1.0, 0, 0, 0), (0.0, 0.5, 0.3, 0, 0), (0.0, 1.0, 0, 0, 0)]}, ["Conv2d", "Conv2d", "Linear"])
    (obs,) = summarize(run).sites[1].observations
    assert (obs.rule, obs.severity) == ("saturation", "info")
    assert "│ near-zero 80% at init, 30% by the last step │" in render(summarize(run), width=200)


@pytest.mark.parametrize("width", [40, 70, 98, 99, 100, 130, 400])
def test_fixed_column_widths_draw_the_table_rich_would_draw(width, monkeypatch):
    """The table's columns get their text's width when it fits (fix_widths): the same text as rich's
    own measurement, at widths where it fits, where it just fits (99) and where rich has to wrap."""
    fixed = render(summarize(DEMO), width=width)
    monkeypatch.setattr("actprobe.render.summary.fix_widths", lambda *args: None)
    assert fixed == render(summarize(DEMO), width=width)


WIDE_NAMES = dataclasses.replace(DEMO, sites=["conv", "块.relu", "deep[0]", "out\x1b[31m"])


@pytest.mark.parametrize("run", [DEMO, WIDE_NAMES], ids=["demo", "wide-characters-and-escapes"])
@pytest.mark.parametrize("color_system", [None, "standard", "truecolor"])
@pytest.mark.parametrize("width", [98, 99, 130, 400])
def test_the_fixed_table_draws_what_rich_draws(run, color_system, width, monkeypatch):
    """FixedTable joins the cells' own segments instead of laying each cell out: the console's output,
    colours and padding included, must be rich's own, byte for byte (99 columns: the table just fits)."""
    def output() -> str:
        console = Console(file=io.StringIO(), width=width, color_system=color_system,
                          force_terminal=color_system is not None)
        render_summary(summarize(run), console)
        return console.file.getvalue()

    fast = output()
    monkeypatch.setattr("actprobe.render.tables.FixedTable.supports", staticmethod(lambda table: False))
    assert fast == output()
    if color_system:
        assert "\x1b[" in fast  # the comparison covered styles


def test_large_summaries_use_the_fixed_table():
    from actprobe.render.summary import summary_table
    from actprobe.render.tables import FixedTable

    assert isinstance(summary_table(summarize(DEMO), 130), FixedTable)
    assert not isinstance(summary_table(summarize(DEMO), 60), FixedTable), "a table that wraps is rich's"


QUIET = hand_run({
    0: [(0.0995, 0.987, 0.3, 0, 0), (0.101, 1.01, 0.3, 0, 0)],
    1: [(0.0998, 0.998, 0.3, 0, 0), (0.0999, 0.99, 0.3, 0, 0)],
}, ["Linear", "ReLU"])


def test_a_table_a_little_too_wide_drops_the_arrows_spaces_instead_of_wrapping_cells():
    """Pairs are "a → b"; where that table is wider than the terminal they are "a→b", one line each (an 80-column
    terminal, a healthy run: the table was one column too wide, and 0.0995 → 0.0998 took two lines)."""
    roomy = render(summarize(QUIET), width=120)
    narrow = render(summarize(QUIET), width=80)
    assert "0.0995 → 0.0998" in roomy and "0.0995→0.0998" not in roomy
    assert "0.0995→0.0998" in narrow and "→ 0.0998" not in narrow
    table = narrow[narrow.index("┏"):]
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and all(len(line) <= 80 for line in table.splitlines())


def test_a_table_that_does_not_fit_either_way_keeps_the_spaces_rich_wraps_at():
    """Where even "a→b" does not fit, the pairs keep their spaces: rich wraps a cell at them, where "a→b"
    would be folded anywhere (a minus sign on one line, its number on the next)."""
    narrow = render(summarize(QUIET), width=60)
    assert "→" in narrow and "→0" not in narrow and "→-" not in narrow
