"""Every Python block of the README marked ``<!-- snippet: NAME -->`` runs as written, in a folder with a
finished ``run.h5`` and a tiny ``model``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import actprobe
from conftest import train_steps

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = dict(re.findall(r"<!-- snippet: (\w+) -->\n```python\n(.*?)```", README.read_text(), re.S))
SHELL = dict(re.findall(r"<!-- shell-snippet: (\w+) -->\n```bash\n(.*?)```", README.read_text(), re.S))
NEEDS = {"notebook": ["pandas", "matplotlib"], "scalars": [], "lightning": ["lightning"],
         "huggingface": ["transformers", "accelerate"]}


def test_the_readme_marks_its_snippets():
    assert sorted(SNIPPETS) == sorted(NEEDS)
    assert sorted(SHELL) == ["tensorboard", "watch"]


def _finished_run(folder: Path) -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10))
    with actprobe.Probe(model, folder / "run.h5") as probe:
        train_steps(model, 3, probe=probe, batch=8, shape=(4,))
    return model


@pytest.mark.parametrize("name", ["tensorboard", "watch"])
def test_a_readme_shell_snippet_runs(name, tmp_path):
    if name == "tensorboard":
        pytest.importorskip("tensorboard", reason="the test extra installs it")
    _finished_run(tmp_path)
    bin_dir = Path(sys.executable).parent  # the environment's actprobe command
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "120"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", SHELL[name]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("wrote " if name == "tensorboard" else "its writer closed it; 3 recorded steps") in done.stdout


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_a_readme_snippet_runs(name, tmp_path, monkeypatch, capsys):
    for module in NEEDS[name]:
        pytest.importorskip(module, reason="the test extra installs it")
    monkeypatch.chdir(tmp_path)
    model = _finished_run(tmp_path)
    torch.manual_seed(0)
    exec(compile(SNIPPETS[name], f"README:{name}", "exec"), {"model": model, "__name__": "__main__"})
    printed = capsys.readouterr().out
    assert printed.strip()
    if name == "notebook":
        assert "activations, step 0 → 2" in printed
