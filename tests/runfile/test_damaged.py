"""Damaged and hostile run files (tests/runfile/_damaged_files.py makes 46 of them) through show, info,
compare, diagnose, plot and actprobe.read: one ``error:`` line naming the file, exit code 2, no
traceback, under a memory cap and a time limit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import actprobe

HELPER = Path(__file__).with_name("_damaged_files.py")
sys.path.insert(0, str(HELPER.parent))
from _damaged_files import CASES, make_all  # noqa: E402

MEMORY_CAP_MIB = 2048
SECONDS = 10.0


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("damaged")
    good = folder.parent / "good.h5"
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with actprobe.Probe(model, good, overwrite=True) as probe:
        for _ in range(4):
            model(torch.randn(5, 4)).sum().backward()
            probe.step(loss=0.5)
    make_all(good, folder)
    result = subprocess.run([sys.executable, str(HELPER), "--check", str(good), str(folder), str(MEMORY_CAP_MIB)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return {(row["file"], row["command"]): row for row in rows}


def test_the_corpus_has_at_least_40_files():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_command_gives_one_error_line(outcomes, case):
    name = f"{case}.h5"
    for command in ("show", "info", "compare", "diagnose", "plot"):
        row = outcomes[(name, command)]
        assert row["code"] == 2 and row["exception"] is None, (command, row)
        lines = [line for line in row["stderr"].splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], (command, row["stderr"])
        assert "Traceback" not in row["stderr"] + row["stdout"], (command, row)
        assert row["seconds"] < SECONDS, (command, row["seconds"])
    read = outcomes[(name, "read")]
    assert read["outcome"].startswith("FormatError: ") and name in read["outcome"], read
    assert read["seconds"] < SECONDS
