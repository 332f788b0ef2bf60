"""Reading files, bad files, and the command line (one clear line and exit code 2 for bad input)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import actprobe
from actprobe.cli import app
from conftest import bad_files as _bad_files, truncated_copy as _truncated


@pytest.fixture()
def run_file(tmp_path):
    path = tmp_path / "run.h5"
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with actprobe.Probe(model, path, meta={"recipe": "cli"}) as probe:
        for _ in range(2):
            model(torch.randn(5, 3)).sum().backward()
            probe.step(loss=0.5)
    return path


@pytest.mark.parametrize("kind", ["missing", "text", "other", "newer", "folder"])
def test_read_rejects_bad_files_with_a_format_error(tmp_path, kind):
    path, message = _bad_files(tmp_path)[kind]
    with pytest.raises(actprobe.FormatError, match=message):
        actprobe.read(path)


def test_read_rejects_a_truncated_file(run_file, tmp_path):
    with pytest.raises(actprobe.FormatError):
        actprobe.read(_truncated(run_file, tmp_path))


def test_run_accessors(run_file):
    run = actprobe.read(run_file)
    assert run.rows == 2 and run.format_version == 1
    assert run.stat("mean", "1").shape == (2,)
    assert np.all(run.stat("min", "1") >= 0)  # a ReLU output
    with pytest.raises(actprobe.FormatError, match="no site 'x'"):
        run.stat("mean", "x")
    with pytest.raises(actprobe.FormatError, match="unknown statistic"):
        run.stat("median")


def test_cli_version_and_info(run_file):
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"actprobe {actprobe.__version__}\n"
    result = runner.invoke(app, ["info", str(run_file)])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"{run_file}: format_version 1, 2 rows, 2 sites"
    assert "  recipe = cli" in lines
    assert "  site 0 (Linear)" in lines and "  site 1 (ReLU)" in lines
    assert lines[-1] == "  scalars: loss"


@pytest.mark.parametrize("kind", ["missing", "text", "other", "newer", "folder"])
def test_cli_bad_file_gives_one_line_and_exit_code_2(tmp_path, kind):
    path, message = _bad_files(tmp_path)[kind]
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: ") and message in result.output
    assert "Traceback" not in result.output


def test_cli_truncated_file(run_file, tmp_path):
    result = CliRunner().invoke(app, ["info", str(_truncated(run_file, tmp_path))])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_python_dash_m_and_console_script(run_file):
    out = subprocess.run([sys.executable, "-m", "actprobe", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"actprobe {actprobe.__version__}"
    bad = subprocess.run([sys.executable, "-m", "actprobe", "info", str(run_file) + ".missing"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_import_and_cli_do_not_load_torch(run_file):
    """`import actprobe`, the CLI, `actprobe show` and reading a file stay light: torch loads with the Probe only."""
    code = ("import sys, actprobe, actprobe.cli; run = actprobe.read(sys.argv[1]); "
            "from actprobe.cli import app; from typer.testing import CliRunner; "
            "assert CliRunner().invoke(app, ['show', sys.argv[1]]).exit_code == 0; "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "actprobe.Probe; assert 'torch' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code, str(run_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
