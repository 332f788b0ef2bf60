"""The layer graph: traced in the first recorded step, stored in `graph/edges`, equal to hand-written edges;
the default selection's container sites; selection by class name."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.engine.selection import select_modules

IN = "<input>"


def traced(model: nn.Module, path, x: torch.Tensor, *, grad: bool = True, **options) -> tuple[actprobe.Run, set]:
    with actprobe.Probe(model, path, train_only=grad, **options) as probe:
        with torch.set_grad_enabled(grad):
            out = model(x)
        if grad:
            sum(v.sum() for v in out.values()).backward() if isinstance(out, dict) else out.sum().backward()
        probe.step()
    run = actprobe.read(path)
    edges = {(IN if a < 0 else run.sites[a], run.sites[b]) for a, b in run.edges}
    return run, edges


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.act = nn.Linear(8, 16), nn.ReLU()
        self.main, self.aux = nn.Linear(16, 3), nn.Linear(16, 2)

    def forward(self, x):
        h = self.act(self.hidden(x))
        return {"main": self.main(h), "aux": self.aux(h)}


class Block(nn.Module):
    """conv → BN → ReLU → conv → BN, plus the input (in place), → ReLU: torchvision's BasicBlock."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += x
        return self.relu(out)


def residual() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), Block(), Block(), nn.Flatten(), nn.Linear(4 * 36, 3))


def test_two_heads_graph_is_the_hand_written_one(tmp_path):
    run, edges = traced(TwoHeads(), tmp_path / "heads.h5", torch.randn(5, 8))
    assert run.sites == ["hidden", "act", "main", "aux"]
    assert edges == {(IN, "hidden"), ("hidden", "act"), ("act", "main"), ("act", "aux")}


def test_residual_graph_is_the_hand_written_one(tmp_path):
    run, edges = traced(residual(), tmp_path / "res.h5", torch.randn(2, 1, 6, 6))
    expected = {(IN, "0"), ("0", "1")}
    before = "1"
    for b in ("2", "3"):
        expected |= {(before, f"{b}.conv1"), (f"{b}.conv1", f"{b}.bn1"), (f"{b}.bn1", f"{b}.relu"),
                     (f"{b}.relu", f"{b}.conv2"), (f"{b}.conv2", f"{b}.bn2"),
                     (f"{b}.bn2", f"{b}.relu#1"), (before, f"{b}.relu#1")}  # the branch and the skip
        before = f"{b}.relu#1"
    expected |= {(before, "4"), ("4", "5")}
    assert edges == expected
    # the file holds it as documented: int32 (E, 2), sorted, sources before targets
    with h5py.File(tmp_path / "res.h5", "r") as f:
        stored = f["graph/edges"][()]
        assert stored.dtype == np.int32 and stored.shape == (len(expected), 2)
        assert [tuple(e) for e in stored] == sorted(tuple(e) for e in stored)
        assert (stored[:, 0] < stored[:, 1]).all()


def test_without_autograd_identity_still_links_a_chain(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    _, edges = traced(model, tmp_path / "nograd.h5", torch.randn(3, 4), grad=False)
    assert edges == {(IN, "0"), ("0", "1"), ("1", "2"), ("2", "3")}


def test_functional_code_between_modules_is_followed(tmp_path):
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(8, 2)

        def forward(self, x):
            h = torch.tanh(self.a(x))  # functional, not a site
            return self.out(torch.cat([h, self.b(x) * 2], dim=1))

    _, edges = traced(Mixed(), tmp_path / "mixed.h5", torch.randn(3, 4))
    assert edges == {(IN, "a"), (IN, "b"), ("a", "out"), ("b", "out")}


def test_containers_are_sites_only_for_outputs_no_site_produced(tmp_path):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
    run, edges = traced(model, tmp_path / "attn.h5", torch.randn(2, 5, 8))
    assert run.sites[0] == "layers.0.self_attn[0]"  # MultiheadAttention: its out_proj is never called
    assert "layers.0" not in run.sites and "layers" not in run.sites  # their outputs are norm2's
    assert run.uncalled == ["layers.0.self_attn.out_proj"]
    assert ("layers.0.norm1", "layers.0.norm2") in edges  # the residual around the feed-forward block
    # after the first step the containers that produced no site are no longer hooked
    assert not model.layers[0]._forward_hooks and model.layers[0].self_attn._forward_hooks == {}


def test_a_block_returning_x_plus_f_x_is_a_site(tmp_path):
    class PreNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.fc = nn.LayerNorm(4), nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc(self.norm(x))

    model = nn.Sequential(PreNorm(), PreNorm())
    run, edges = traced(model, tmp_path / "prenorm.h5", torch.randn(3, 4))
    assert run.sites == ["0.norm", "0.fc", "0", "1.norm", "1.fc", "1"]
    assert ("0", "1") in edges and ("0.fc", "0") in edges


def test_explicit_selection_records_no_container_outputs(tmp_path):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    run, _ = traced(layer, tmp_path / "sel.h5", torch.randn(2, 5, 8), select="*norm*")
    assert run.sites == ["norm1", "norm2"] and run.uncalled == []


def test_select_by_class_name_as_in_the_python_api():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2), nn.ReLU())
    by_name = [name for name, _ in select_modules(model, "ReLU")]
    assert by_name == [name for name, _ in select_modules(model, nn.ReLU)] == ["1", "4"]
    assert [name for name, _ in select_modules(model, ["nn.Linear", "0"])] == ["0", "3"]
    with pytest.raises(actprobe.SelectionError):
        select_modules(model, "Tanh")


def test_probe_graph_property_and_files_without_a_graph(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with actprobe.Probe(model, tmp_path / "g.h5") as probe:
        assert probe.graph.edges == ()
        model(torch.randn(2, 4)).sum().backward()
        probe.step()
        assert probe.graph.edges == ((-1, 0), (0, 1))
    with h5py.File(tmp_path / "g.h5", "a") as f:  # as an actprobe 0.1 file: no graph group
        del f["graph"]
    assert actprobe.read(tmp_path / "g.h5").edges is None


def test_in_place_modules_without_autograd_keep_their_edges(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 4), nn.ReLU(inplace=True))
    _, edges = traced(model, tmp_path / "inplace.h5", torch.randn(3, 4), grad=False)
    assert edges == {(IN, "0"), ("0", "1"), ("1", "2"), ("2", "3")}


def test_a_view_of_an_input_does_not_take_over_its_producer():
    class View(nn.Module):
        def forward(self, t):
            return t.view(-1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.v, self.c = nn.Linear(4, 4), View(), nn.Linear(4, 4)

        def forward(self, x):
            t = self.a(x) + 1.0  # not a site's output: a's output plus a constant
            self.v(t)
            return self.c(t)

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        _, edges = traced(Net(), Path(folder) / "view.h5", torch.randn(3, 4))
    assert edges == {(IN, "a"), ("a", "v"), ("a", "c")}


def test_a_container_returning_a_child_output_and_its_own_warns_nothing(tmp_path):
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            h = self.fc(x)
            return h, h * 2  # [0] is fc's output, [1] is the pair's own

    model = nn.Sequential(Pair())
    with warnings.catch_warnings():
        warnings.simplefilter("error", actprobe.ActprobeWarning)
        with actprobe.Probe(model, tmp_path / "pair.h5") as probe:
            for _ in range(3):
                sum(t.sum() for t in model(torch.randn(2, 4))).backward()
                probe.step()
    run = actprobe.read(tmp_path / "pair.h5")
    assert run.sites == ["0.fc", "0[1]"] and np.isfinite(run.stats["mean"]).all()
