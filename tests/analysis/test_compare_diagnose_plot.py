"""`actprobe compare`, `actprobe diagnose` and `actprobe plot` on run files recorded by the Probe on
small real models (and the paper's CNN on real Fashion-MNIST), checked against h5py reads of the
same files, exact rule outcomes, the JSON shape and the exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import actprobe
from actprobe import OptionError, datasets
from actprobe.cli import app
from actprobe.analysis.compare import compare, match_sites
from actprobe.analysis.diagnose import Rules, diagnose
from actprobe.init import init_weights
from actprobe.models import paper_cnn
from actprobe.nn import WIBReLU, calibrate
from conftest import assert_one_line_error

RUNNER = CliRunner()
ENV = {"COLUMNS": "200", "ACTPROBE_OFFLINE": "1"}


def invoke(*args: object):
    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


def record(path: Path, model: nn.Module, batches, *, lr: float = 0.0, every: int = 1, hook=None) -> Path:
    """Train (or, with lr 0, just run forward passes in train mode) with a probe attached."""
    opt = torch.optim.Adam(model.parameters(), lr=lr) if lr else None
    with actprobe.Probe(model, path, every=every) as probe:
        for step, (x, y) in enumerate(batches):
            if hook is not None:
                hook(step, model)
            out = model(x)
            loss = nn.functional.cross_entropy(out, y)
            if opt is not None:
                opt.zero_grad()
                loss.backward()
                opt.step()
            probe.step(loss=loss.detach())
    return path


def random_batches(steps: int, features: int = 32, classes: int = 4, batch: int = 64, scale: float = 1.0,
                   seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(batch, features, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(steps)]


def mlp(layers: int = 6, width: int = 32, act=nn.ReLU, init: str = "kaiming", classes: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    parts: list[nn.Module] = []
    for _ in range(layers):
        parts += [nn.Linear(width, width), act()]
    model = nn.Sequential(*parts, nn.Linear(width, classes))
    init_weights(model, init, zero_bias=True)
    return model


# -- the paper's CNN on real data, both inits -------------------------------------------------------
@pytest.fixture(scope="module")
def cnn_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn")
    batches = [b for _, b in zip(range(20), datasets.loader("fashion-mnist", "train", batch_size=64, seed=0))]
    runs = {}
    for init in ("torch-default", "kaiming"):
        torch.manual_seed(0)
        model = paper_cnn(1)
        init_weights(model, init)
        runs[init] = record(folder / f"{init}.h5", model, batches, lr=1e-3)
    return runs


def test_diagnose_flags_the_default_init_cnn_and_passes_the_kaiming_one(cnn_runs):
    bad = invoke("diagnose", cnn_runs["torch-default"])
    assert bad.exit_code == 1, bad.output
    assert "ERROR vanishing" in bad.output and "kaiming" in bad.output.lower()
    found = {f.rule: f for f in diagnose(actprobe.read(cnn_runs["torch-default"]))}
    assert found["vanishing"].severity == "error" and found["vanishing"].sites == ("1", "3", "5", "7")
    assert found["vanishing"].evidence["factor_per_layer"] < 0.6
    good = invoke("diagnose", cnn_runs["kaiming"], "--fail-on", "warning")
    assert good.exit_code == 0, good.output
    rules = {f.rule for f in diagnose(actprobe.read(cnn_runs["kaiming"]))}
    assert rules <= {"mean-shift"}, rules


def test_compare_the_two_inits_matches_by_name_and_reports_h5py_values(cnn_runs, tmp_path):
    a, b = cnn_runs["torch-default"], cnn_runs["kaiming"]
    comparison = compare([actprobe.read(a), actprobe.read(b)], step="first", stats=("std", "near_zero"))
    assert comparison.matching.method == "name" and comparison.matching.by_name == 11
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        sites = [s.decode() for s in fa["sites"][()]]
        for cell in comparison.cells:
            column = sites.index(cell.site.label)
            want = (float(fa[f"stats/{cell.stat}"][0, column]), float(fb[f"stats/{cell.stat}"][0, column]))
            assert cell.values == want
            assert cell.changes[0] == pytest.approx(want[1] - want[0])
    top = comparison.largest(1)[0]
    assert top.stat == "std" and top.site.label in ("5", "6", "7", "8", "9")  # deep layers change most
    result = invoke("compare", a, b, "--step", "first", "--figure", tmp_path / "overlay.png")
    assert result.exit_code == 0, result.output
    assert "11 by name with the same module type, 0 by position" in result.output and "largest changes:" in result.output
    assert (tmp_path / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    short = invoke("compare", a, b, "--step", "first", "--top", 2, "--stats", "std")
    assert short.exit_code == 0, short.output
    rows = [line.split("│")[1].strip() for line in short.output.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and top.site.label in rows
    assert "showing the 2 of 11 sites with the largest changes (--top 0 shows all)" in short.output
    assert_one_line_error(invoke("compare", a, b, "--top", -1), "--top")


def test_plot_writes_the_standard_figures(cnn_runs, tmp_path):
    import matplotlib.image

    result = invoke("plot", cnn_runs["torch-default"], "--out", tmp_path / "figs")
    assert result.exit_code == 0, result.output
    for name in ("torch-default-mean-std.png", "torch-default-near-zero.png"):
        image = matplotlib.image.imread(tmp_path / "figs" / name)
        assert image.shape[0] > 200 and image[..., :3].std() > 0.01
    picked = invoke("plot", cnn_runs["kaiming"], "--out", tmp_path / "sel", "--select", "0", "--select", "2")
    assert picked.exit_code == 0 and len(list((tmp_path / "sel").glob("*.png"))) == 2
    assert_one_line_error(invoke("plot", cnn_runs["kaiming"], "--select", "nosuch*"), "matches no site")


# -- site matching ----------------------------------------------------------------------------------
class Named(nn.Module):
    """The same layers as ``mlp(2)``, under other names, with WIB-ReLU in place of ReLU."""

    def __init__(self, extra: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.act1 = nn.Linear(32, 32), WIBReLU("fixed")
        self.fc2, self.act2 = nn.Linear(32, 32), WIBReLU("fixed")
        self.head = nn.Linear(32, 4)
        self.extra = nn.Tanh() if extra else None

    def forward(self, x):
        x = self.act2(self.fc2(self.act1(self.fc1(x))))
        if self.extra is not None:
            x = self.extra(x)
        return self.head(x)


def test_matching_by_position_when_names_differ(tmp_path):
    a = record(tmp_path / "a.h5", mlp(2), random_batches(3))
    b = record(tmp_path / "b.h5", Named(), random_batches(3))
    m = match_sites([actprobe.read(a), actprobe.read(b)])
    assert m.method == "position" and m.by_position == 5 and m.unmatched == ((), ())
    assert [(s.role, s.names) for s in m.sites] == [
        ("linear", ("0", "fc1")), ("activation", ("1", "act1")), ("linear", ("2", "fc2")),
        ("activation", ("3", "act2")), ("linear", ("4", "head"))]
    result = invoke("compare", a, b)
    assert result.exit_code == 0, result.output
    assert "5 by position" in result.output
    assert "by position (activation): a.h5:1 (ReLU) ↔ b.h5:act1 (WIBReLU)" in result.output


def test_partial_matching_reports_what_it_could_not_match(tmp_path):
    a = record(tmp_path / "a.h5", mlp(2), random_batches(3))
    b = record(tmp_path / "b.h5", Named(extra=True), random_batches(3))
    c = record(tmp_path / "c.h5", mlp(2), random_batches(3, seed=1))
    m = match_sites([actprobe.read(p) for p in (a, b, c)])
    # the Tanh is a third activation in b only: 2 activations matched, b's "extra" left over
    assert m.by_position == 5 and m.unmatched == ((), ("extra",), ())
    result = invoke("compare", a, b, c)
    assert result.exit_code == 0, result.output
    assert "not matched in b.h5: extra" in result.output and "C − A" in result.output


def test_step_choice_first_last_n_and_missing(tmp_path):
    a = record(tmp_path / "a.h5", mlp(2), random_batches(10), lr=1e-2, every=3)  # steps 0 3 6 9
    b = record(tmp_path / "b.h5", mlp(2), random_batches(10, seed=1), lr=1e-2)
    ra, rb = actprobe.read(a), actprobe.read(b)
    assert compare([ra, rb], step="first").choice.steps == (0, 0)
    assert compare([ra, rb], step="last").choice.steps == (9, 9)
    choice = compare([ra, rb], step="5").choice
    assert choice.steps == (3, 5) and choice.rows == (1, 5)
    assert "a.h5: step 5 not recorded; using step 3" in choice.notes[0]
    with pytest.raises(OptionError, match="first, last or a step number"):
        compare([ra, rb], step="middle")
    assert_one_line_error(invoke("compare", a, b, "--step", "-1"), "--step")
    assert_one_line_error(invoke("compare", a, b, "--stats", "mean,bogus"), "unknown statistic 'bogus'")
    assert_one_line_error(invoke("compare", a), "at least two run files")


def test_compare_and_diagnose_read_a_file_still_being_written(tmp_path):
    done = record(tmp_path / "done.h5", mlp(2), random_batches(4))
    model = mlp(2)
    with actprobe.Probe(model, tmp_path / "live.h5") as probe:
        for x, y in random_batches(4):
            model(x)
            probe.step()
        probe.flush(wait=True)
        result = invoke("compare", done, tmp_path / "live.h5")
        assert result.exit_code == 0, result.output
        assert "live.h5 at step 3 (4 recorded steps) — still being written" in result.output
        diag = invoke("diagnose", tmp_path / "live.h5")
        assert diag.exit_code == 0 and "still being written" in diag.output
        assert invoke("plot", tmp_path / "live.h5", "--out", tmp_path / "p").exit_code == 0


# -- each rule: a file that triggers it, and one that does not --------------------------------------
def rules_of(path: Path, rules: Rules | None = None) -> dict[str, object]:
    return {f.rule: f for f in diagnose(actprobe.read(path), rules)}


def test_vanishing_and_exploding(tmp_path):
    vanish = rules_of(record(tmp_path / "v.h5", mlp(init="torch-default"), random_batches(2)))
    assert vanish["vanishing"].severity == "error" and len(vanish["vanishing"].sites) == 6
    explode = rules_of(record(tmp_path / "e.h5", mlp(init="normal"), random_batches(2)))  # N(0,1) weights
    assert explode["exploding"].severity == "error" and "vanishing" not in explode
    assert explode["exploding"].evidence["factor_per_layer"] == pytest.approx(np.sqrt(32 / 2), rel=0.25)
    fine = rules_of(record(tmp_path / "k.h5", mlp(init="kaiming"), random_batches(2)))
    assert "vanishing" not in fine and "exploding" not in fine


def test_mean_shift_after_relu_and_not_after_wib_relu(tmp_path):
    shifted = rules_of(record(tmp_path / "r.h5", mlp(3), random_batches(2)))
    assert shifted["mean-shift"].severity == "info" and shifted["mean-shift"].sites == ("1", "3", "5")
    model = mlp(3, act=lambda: WIBReLU("fixed"))
    calibrate(model, random_batches(4, seed=5))
    centred = rules_of(record(tmp_path / "w.h5", model, random_batches(2, seed=5)))
    assert "mean-shift" not in centred


def test_saturation(tmp_path):
    tiny = rules_of(record(tmp_path / "s.h5", mlp(3, act=nn.Tanh), random_batches(2, scale=0.001)))
    assert tiny["saturation"].severity == "warning" and "1" in tiny["saturation"].sites
    normal = rules_of(record(tmp_path / "n.h5", mlp(3, act=nn.Tanh), random_batches(2)))
    assert "saturation" not in normal


def test_dead_units_warning_and_error(tmp_path):
    def with_dead(fraction: float) -> nn.Module:
        model = mlp(2)
        with torch.no_grad():
            model[0].bias[: int(fraction * 32)] = -1e3  # these ReLU units never fire
        return model

    some = rules_of(record(tmp_path / "d1.h5", with_dead(0.25), random_batches(2)))
    assert some["dead-units"].severity == "warning" and "1" in some["dead-units"].sites
    assert some["dead-units"].evidence["dead"]["1"] == pytest.approx(0.25, abs=1e-6)
    most = rules_of(record(tmp_path / "d2.h5", with_dead(0.75), random_batches(2)))
    assert most["dead-units"].severity == "error"
    assert "dead-units" not in rules_of(record(tmp_path / "d0.h5", mlp(2), random_batches(2)))


def test_non_finite_names_the_first_step_and_site(tmp_path):
    batches = random_batches(6)
    batches[3][0][0, 0] = float("nan")
    found = rules_of(record(tmp_path / "nan.h5", mlp(2), batches))
    assert found["non-finite"].severity == "error" and found["non-finite"].steps == (3,)
    assert found["non-finite"].evidence["first_sites"][0] == "0"
    assert "non-finite" not in rules_of(record(tmp_path / "ok.h5", mlp(2), random_batches(6)))


def test_drift_and_its_configurable_threshold(tmp_path):
    def blow_up(step: int, model: nn.Module) -> None:
        if step == 10:
            with torch.no_grad():
                model[0].weight.mul_(20.0)

    path = record(tmp_path / "drift.h5", mlp(2), random_batches(20), hook=blow_up)
    found = rules_of(path)
    assert found["drift"].severity == "warning" and "0" in found["drift"].sites
    assert found["drift"].evidence["std_ratio"]["0"] == pytest.approx(20.0, rel=0.2)
    assert "drift" not in rules_of(path, Rules(drift_factor=100.0))
    steady = record(tmp_path / "steady.h5", mlp(2), random_batches(20))
    assert "drift" not in rules_of(steady)
    result = invoke("diagnose", path, "--json", "--threshold", "drift_factor=100")
    assert result.exit_code == 0 and "drift" not in {f["rule"] for f in json.loads(result.stdout)}
    assert_one_line_error(invoke("diagnose", path, "--threshold", "drift=3"), "NAME=VALUE")
    assert_one_line_error(invoke("diagnose", path, "--threshold", "drift_factor=x"), "not a number")
    assert_one_line_error(invoke("diagnose", path, "--threshold", "drift_factor=-1"), "non-negative")


# -- JSON and exit codes ----------------------------------------------------------------------------
def test_json_shape_and_exit_codes(tmp_path):
    batches = random_batches(12)
    batches[5][0][0, 0] = float("inf")
    path = record(tmp_path / "bad.h5", mlp(3, init="torch-default"), batches)
    result = invoke("diagnose", path, "--json")
    assert result.exit_code == 1
    findings = json.loads(result.stdout)
    assert isinstance(findings, list) and findings
    for f in findings:
        assert set(f) >= {"rule", "severity", "sites", "steps", "message", "advice", "evidence"}
        assert f["severity"] in ("info", "warning", "error") and isinstance(f["message"], str)
        assert isinstance(f["sites"], list) and all(isinstance(s, str) for s in f["sites"])
        assert all(isinstance(s, int) for s in f["steps"])
    assert [f["severity"] for f in findings] == sorted((f["severity"] for f in findings),
                                                       key=("error", "warning", "info").index)
    assert {"vanishing", "non-finite", "mean-shift"} <= {f["rule"] for f in findings}
    assert invoke("diagnose", path, "--fail-on", "never").exit_code == 0
    only_info = record(tmp_path / "info.h5", mlp(3), random_batches(2))
    assert invoke("diagnose", only_info).exit_code == 0
    assert invoke("diagnose", only_info, "--fail-on", "warning").exit_code == 0
    assert invoke("diagnose", only_info, "--fail-on", "info").exit_code == 1
    assert_one_line_error(invoke("diagnose", only_info, "--fail-on", "sometimes"), "--fail-on")


# -- bad files --------------------------------------------------------------------------------------
@pytest.fixture
def bad_files(tmp_path):
    good = record(tmp_path / "good.h5", mlp(2), random_batches(3))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:2000])
    text = tmp_path / "notes.h5"
    text.write_text("not a run file\n")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    return good, {"missing": (tmp_path / "nope.h5", "no such file"), "truncated": (truncated, "truncated.h5"),
                  "text": (text, "not an HDF5 file"), "foreign": (foreign, "not an actprobe run file")}


@pytest.mark.parametrize("kind", ["missing", "truncated", "text", "foreign"])
def test_bad_files_give_one_line_and_exit_2(bad_files, kind, tmp_path):
    good, cases = bad_files
    path, message = cases[kind]
    assert_one_line_error(invoke("diagnose", path), message)
    assert_one_line_error(invoke("diagnose", path, "--json"), message)
    assert_one_line_error(invoke("plot", path, "--out", tmp_path / "p"), message)
    assert_one_line_error(invoke("compare", good, path), message)
    assert not (tmp_path / "p").exists()


def test_documented_thresholds_are_the_defaults():
    import dataclasses

    doc = (Path(__file__).resolve().parents[2] / "docs" / "DIAGNOSE.md").read_text()
    section = doc.split("## Thresholds", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    documented = {row[0]: float(row[1]) for row in rows}
    defaults = {f.name: float(getattr(Rules(), f.name)) for f in dataclasses.fields(Rules)}
    assert documented == defaults


def test_same_names_of_different_module_types_are_not_matched_by_name(tmp_path):
    """`1` is a ReLU in one run and a Tanh in the other, `2` a Linear and a Dropout: never lined up by name."""
    a = record(tmp_path / "a.h5", nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)), random_batches(2))
    b = record(tmp_path / "b.h5", nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 4)),
               random_batches(2))
    m = match_sites([actprobe.read(a), actprobe.read(b)])
    assert [(s.label, s.how, s.module_type) for s in m.sites] == [
        ("0", "name", "Linear"), ("1", "position", "ReLU ↔ Tanh"), ("2 ↔ 3", "position", "Linear")]
    assert m.type_clashes == (("1", ("ReLU", "Tanh")), ("2", ("Linear", "Dropout")))
    assert m.unmatched == ((), ("2",))
    result = invoke("compare", a, b)
    assert "same name, different module types (not matched by name): 2 Linear ↔ Dropout" in result.output
    assert "by position (linear): a.h5:2 (Linear) ↔ b.h5:3 (Linear)" in result.output
