"""An optional extra that is not installed gives one clear message naming the extra to install."""

from __future__ import annotations

import importlib
import re
import sys

import pytest
from typer.testing import CliRunner

import actprobe
from actprobe.cli import app
from conftest import assert_one_line_error, one_recorded_step


@pytest.mark.parametrize("module,missing,extra", [
    ("actprobe.integrations.lightning", ("lightning", "lightning.pytorch", "pytorch_lightning"), "actprobe[lightning]"),
    ("actprobe.integrations.huggingface", ("transformers",), "actprobe[hf]"),
])
def test_an_integration_without_its_framework_names_the_extra(monkeypatch, module, missing, extra):
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)  # import of it fails, as when it is not installed
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=re.escape(f"pip install '{extra}'")):
        importlib.import_module(module)


def test_to_pandas_without_pandas_names_the_extra(tmp_path, monkeypatch):
    one_recorded_step(tmp_path / "run.h5")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"actprobe\[pandas\]"):
        actprobe.read(tmp_path / "run.h5").to_pandas()


def test_export_without_tensorboard_is_one_line(tmp_path, monkeypatch):
    one_recorded_step(tmp_path / "run.h5")
    for name in ("tensorboard", "tensorboard.compat", "tensorboard.compat.proto", "tensorboard.summary",
                 "tensorboard.summary.writer", "tensorboard.summary.writer.event_file_writer"):
        monkeypatch.setitem(sys.modules, name, None)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run.h5"), "--tensorboard", str(tmp_path / "tb")])
    assert_one_line_error(result, "pip install 'actprobe[tensorboard]'")
