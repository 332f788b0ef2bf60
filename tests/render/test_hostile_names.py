"""Site names and attributes that look like markup or hold control characters are shown verbatim and
safely by every command; figures draw them without reading them as mathtext."""

from __future__ import annotations

import torch
from torch import nn
from typer.testing import CliRunner

import actprobe
from actprobe.cli import app
from actprobe.render.text import printable

NAMES = ("[logits]", "[aux]", "[/]", "[bold red]x[/]", "a$b_c$", "esc\x1b[31mred", "rtl\u202eabc")


class Hostile(nn.Module):
    """A dict-output model whose sites are named like markup, plus modules with hostile names."""

    def __init__(self) -> None:
        super().__init__()
        for i, name in enumerate(NAMES[2:]):
            self.add_module(name, nn.Linear(4, 4))

    def forward(self, x):
        for module in self.children():
            x = torch.relu(module(x))
        return {"logits": x, "aux": x * 2}


def _recorded(tmp_path):
    path = tmp_path / "hostile.h5"
    model = Hostile()
    with actprobe.Probe(model, path, select=lambda name, module: True, meta={"note": "bell\x07 and \x1b[2J"}) as probe:
        for _ in range(3):
            model(torch.randn(8, 4))["logits"].sum().backward()
            probe.step()
    return path


def test_printable_escapes_control_characters_only():
    assert printable("[logits] a$b") == "[logits] a$b"
    assert printable("esc\x1b[31m") == "esc\\x1b[31m"
    assert printable("rtl\u202eabc") == "rtl\\u202eabc"
    assert printable("tab\there") == "tab\\x09here"


def test_every_command_shows_the_names_verbatim_and_without_escapes(tmp_path):
    path = _recorded(tmp_path)
    run = actprobe.read(path)
    assert "<root>[logits]" in run.sites and "<root>[aux]" in run.sites
    runner = CliRunner()
    for args in (["show", str(path)], ["info", str(path)], ["diagnose", str(path)],
                 ["compare", str(path), str(path)]):
        result = runner.invoke(app, args, env={"COLUMNS": "250"})
        assert result.exit_code in (0, 1), (args, result.output)
        out = result.output
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, args
        if args[0] != "diagnose":
            assert "<root>[logits]" in out and "<root>[aux]" in out, (args, out)
            assert "[/]" in out and "[bold red]x[/]" in out and "esc\\x1b[31mred" in out, (args, out)
    info = runner.invoke(app, ["info", str(path)]).output
    assert "note = bell\\x07 and \\x1b[2J" in info
    plot = runner.invoke(app, ["plot", str(path), "--out", str(tmp_path / "fig"), "--select", "*"])
    assert plot.exit_code == 0, plot.output
    assert len(list((tmp_path / "fig").glob("*.png"))) == 2
