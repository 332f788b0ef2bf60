"""Every Python block of the README marked ``<!-- snippet: NAME -->`` runs as written, in a folder with a
finished ``run.h5`` and a tiny ``model``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import actprobe
from conftest import train_steps

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = dict(re.findall(r"<!-- snippet: (\w+) -->\n```python\n(.*?)```", README.read_text(), re.S))
NEEDS = {"notebook": ["pandas", "matplotlib"], "lightning": ["lightning"], "huggingface": ["transformers", "accelerate"]}


def test_the_readme_marks_its_snippets():
    assert sorted(SNIPPETS) == sorted(NEEDS)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_a_readme_snippet_runs(name, tmp_path, monkeypatch, capsys):
    for module in NEEDS[name]:
        pytest.importorskip(module, reason="the test extra installs it")
    monkeypatch.chdir(tmp_path)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10))
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        train_steps(model, 3, probe=probe, batch=8, shape=(4,))
    torch.manual_seed(0)
    exec(compile(SNIPPETS[name], f"README:{name}", "exec"), {"model": model, "__name__": "__main__"})
    printed = capsys.readouterr().out
    assert printed.strip()
    if name == "notebook":
        assert "activations, step 0 → 2" in printed
