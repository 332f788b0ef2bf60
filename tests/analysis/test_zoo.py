"""The diagnosis judged on a zoo of networks it was not written for (tests/analysis/zoo.py): healthy ones
produce nothing above info, broken ones the right rule at the right sites, and `show` and `diagnose`
agree on every file — through the library and through the commands' JSON."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import actprobe
from actprobe.analysis.diagnose import diagnose
from actprobe.analysis.rules import rank
from actprobe.analysis.summary import summarize
from actprobe.cli import app

from zoo import ZOO, record

HEALTHY = [name for name, member in ZOO.items() if member.healthy]
BROKEN = [name for name, member in ZOO.items() if not member.healthy]


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    return {name: record(name, folder / f"{name}.h5") for name in ZOO}


def above_info(path) -> dict[str, set[str]]:
    """rule → the sites where it fired as a warning or an error, from diagnose."""
    found: dict[str, set[str]] = {}
    for finding in diagnose(actprobe.read(path)):
        if rank(finding.severity) > rank("info"):
            found.setdefault(finding.rule, set()).update(finding.sites)
    return found


def test_the_zoo_has_at_least_twelve_networks():
    assert len(ZOO) >= 12 and len(HEALTHY) >= 8 and len(BROKEN) >= 4


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_networks_produce_nothing_above_info(zoo_files, name):
    assert above_info(zoo_files[name]) == {}
    summary = summarize(actprobe.read(zoo_files[name]))
    assert [o for o in summary.observations if o.severity != "info"] == []
    assert not any(site.flagged for site in summary.sites)


def test_default_init_deep_mlp_vanishes_along_its_relus(zoo_files):
    run = actprobe.read(zoo_files["default-deep-mlp"])
    found = above_info(zoo_files["default-deep-mlp"])
    relus = {name for name, kind in zip(run.sites, run.site_module_types) if kind == "ReLU"}
    assert set(found) == {"vanishing", "vanishing-gradient", "saturation", "dead-units"}
    assert found["vanishing"] == relus  # the whole path: the signal stays collapsed after it vanished
    assert found["vanishing-gradient"] == relus  # and the gradient on its way back
    gradient = next(f for f in diagnose(run) if f.rule == "vanishing-gradient")
    assert gradient.evidence["factor_per_layer"] < 0.5 and not gradient.evidence["activations_healthy"]
    # consequences of the collapse, deeper in: never in the first two layers, where the signal is whole
    depth = {name: k for k, name in enumerate(run.sites)}
    assert min(depth[s] for s in found["saturation"] | found["dead-units"]) > 4
    vanishing = next(f for f in diagnose(run) if f.rule == "vanishing")
    assert vanishing.severity == "error" and vanishing.evidence["factor_per_layer"] < 0.75


def test_normal_weights_explode_along_the_relus(zoo_files):
    run = actprobe.read(zoo_files["normal-weights"])
    relus = {name for name, kind in zip(run.sites, run.site_module_types) if kind == "ReLU"}
    assert above_info(zoo_files["normal-weights"]) == {"exploding": relus, "exploding-gradient": relus}


def test_dead_bias_is_reported_where_the_units_die(zoo_files):
    found = diagnose(actprobe.read(zoo_files["dead-bias"]))
    dead = [f for f in found if f.rule == "dead-units"]
    # the ReLU after the -10 bias; behind it nothing reaches the weights: none of them moves
    assert above_info(zoo_files["dead-bias"]) == {"dead-units": {"4"},
                                                  "update-ratio": {"1.weight", "3.weight", "5.weight", "7.weight"}}
    assert dead[0].severity == "error" and "lower the learning rate" in dead[0].advice
    (frozen,) = [f for f in found if f.rule == "update-ratio"]
    assert "barely move" in frozen.message and all(v == 0 for v in frozen.evidence["update_ratio"].values())


def test_nan_from_a_step_names_its_first_site(zoo_files):
    run = actprobe.read(zoo_files["nan-from-step-8"])
    (finding,) = [f for f in diagnose(run) if f.rule == "non-finite"]
    assert finding.evidence["first_step"] == 8 and finding.evidence["first_sites"] == ["1"]
    assert above_info(zoo_files["nan-from-step-8"]) == {"non-finite": {"1", "2", "3", "4", "5"}}


def test_zero_initialised_head_at_init_is_info_with_fitting_advice(zoo_files):
    found = diagnose(actprobe.read(zoo_files["zero-head-init"]))
    dead = [f for f in found if f.rule == "dead-units"]
    assert [(f.severity, f.sites) for f in dead] == [("info", ("5",))]
    assert "learning rate" not in dead[0].advice and "zero" in dead[0].advice


def test_attention_is_recorded_and_the_uncalled_out_proj_is_named(zoo_files):
    run = actprobe.read(zoo_files["transformer"])
    assert "encoder.layers.0.self_attn[0]" in run.sites and "encoder.layers.1.self_attn[0]" in run.sites
    assert run.site_module_types[run.sites.index("encoder.layers.0.self_attn[0]")] == "MultiheadAttention"
    assert run.uncalled == ["encoder.layers.0.self_attn.out_proj", "encoder.layers.1.self_attn.out_proj"]


def _by_site(observations) -> set[tuple[str, str, str]]:
    return {(o["rule"], site, o["severity"]) for site, obs in observations for o in obs}


@pytest.mark.parametrize("name", list(ZOO))
def test_show_and_diagnose_agree(zoo_files, name):
    """The same (rule, site) pairs and, per rule, the same worst severity — read from both commands' JSON."""
    runner = CliRunner()
    shown = json.loads(runner.invoke(app, ["show", str(zoo_files[name]), "--json"]).stdout)
    diagnosed = json.loads(runner.invoke(app, ["diagnose", str(zoo_files[name]), "--json",
                                               "--fail-on", "never"]).stdout)
    from_show = {(o["rule"], site["site"]) for site in shown["sites"] for o in site["observations"]}
    from_show |= {(o["rule"], p["parameter"]) for p in shown["parameters"] for o in p["observations"]}
    from_diagnose = {(f["rule"], site) for f in diagnosed for site in f["sites"]}
    assert from_show == from_diagnose
    worst_show: dict[str, int] = {}
    for site in shown["sites"] + [{"observations": p["observations"]} for p in shown["parameters"]]:
        for o in site["observations"]:
            worst_show[o["rule"]] = max(worst_show.get(o["rule"], 0), rank(o["severity"]))
    worst_diagnose: dict[str, int] = {}
    for f in diagnosed:
        worst_diagnose[f["rule"]] = max(worst_diagnose.get(f["rule"], 0), rank(f["severity"]))
    assert worst_show == worst_diagnose
    assert shown["counts"]["error"] > 0 if name in BROKEN else shown["counts"]["error"] == 0


def test_a_module_skipped_in_the_first_forward_gives_a_column_out_of_order(tmp_path):
    """Gradient accumulation with a block skipped in the first micro-batch (LayerDrop): the block's
    sites come after those it feeds; the analysis orders the graph itself."""
    import torch
    from torch import nn

    class Drop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.r1, self.b, self.r2 = nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU()
            self.c, self.r3, self.out = nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)

        def forward(self, x, skip=False):
            h = self.r1(self.a(x))
            if not skip:
                h = self.r2(self.b(h))
            return self.out(self.r3(self.c(h)))

    torch.manual_seed(0)
    model = Drop()
    with actprobe.Probe(model, tmp_path / "drop.h5") as probe:
        for _ in range(3):
            model(torch.randn(8, 16), skip=True).sum().backward()
            model(torch.randn(8, 16)).sum().backward()
            probe.step()
    run = actprobe.read(tmp_path / "drop.h5")
    assert run.sites.index("r2") > run.sites.index("c")  # a later column than the site it feeds
    vanishing = {f.rule: f for f in diagnose(run)}["vanishing"]  # PyTorch's default init
    assert vanishing.evidence["path"] == ["r1", "r2", "r3"]
    assert CliRunner().invoke(app, ["show", str(tmp_path / "drop.h5")]).exit_code == 0
