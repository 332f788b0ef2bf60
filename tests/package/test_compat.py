"""actprobe 0.1's flat import paths keep working, with a DeprecationWarning that names the new path;
the validator of numeric options says the same thing everywhere."""

from __future__ import annotations

import importlib
import warnings
import sys

import pytest

from actprobe._checks import check_number, positive_int
from actprobe.errors import OptionError


@pytest.mark.parametrize("old, name, new", [
    ("actprobe.summary", "summarize", "actprobe.analysis.summary"),
    ("actprobe.reader", "read", "actprobe.runfile.reader"),
    ("actprobe.terminal", "render_summary", "actprobe.render.summary"),
    ("actprobe.reduce", "tensor_statistics", "actprobe.stats.single"),
    ("actprobe.kernels", "MomentKernel", "actprobe.stats.dispatch"),
    ("actprobe.probe", "Probe", "actprobe.engine.probe"),
    ("actprobe.runner", "resolve_device", "actprobe.training.device"),
])
def test_old_import_paths_resolve_to_the_moved_objects(old, name, new):
    sys.modules.pop(old, None)  # a fresh import of the old name, as in a new process
    with pytest.warns(DeprecationWarning, match=f"{old} has moved to .*{new}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_an_unknown_old_name_still_fails():
    with pytest.raises(ImportError):
        import actprobe.no_such_module  # noqa: F401


@pytest.mark.parametrize("call, message", [
    (lambda: positive_int("every", 0), "every must be a positive integer, got 0"),
    (lambda: positive_int("--steps", True), "--steps must be a positive integer, got True"),
    (lambda: positive_int("per_class", -3, allow_none=True), "per_class must be a positive integer or None, got -3"),
    (lambda: positive_int("--per-class", -3, allow_none=True), "--per-class must be a positive integer, got -3"),
    (lambda: check_number("--lr", 0.0, minimum=0.0, strict=True), "--lr must be a positive number, got 0.0"),
    (lambda: check_number("eps", float("nan")), "eps must be a non-negative number, got nan"),
    (lambda: check_number("t", float("inf")), "t must be a non-negative number, got inf"),
    (lambda: check_number("--top", -1, integer=True, allow_none=True), "--top must be 0 or a positive integer, got -1"),
])
def test_one_validator_one_message(call, message):
    with pytest.raises(OptionError) as caught:
        call()
    assert str(caught.value) == message


def test_the_validator_accepts_what_it_should():
    positive_int("every", 1)
    positive_int("per_class", None, allow_none=True)
    check_number("flush_seconds", float("inf"), allow_inf=True)
    check_number("--lr", 1e-3, minimum=0.0, strict=True)
    check_number("x", 0)


def test_actprobe_summary_is_callable_also_after_the_old_module_was_imported(tmp_path):
    import torch

    import actprobe
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        model(torch.randn(8, 4)).sum().backward()
        probe.step()
    with warnings.catch_warnings():  # the DeprecationWarning is tested above
        warnings.simplefilter("ignore")
        import actprobe.summary  # noqa: F401  (0.1 module, now actprobe.analysis.summary)
        import actprobe.reader as old_reader
    assert "2 sites" in str(actprobe.summary(tmp_path / "run.h5"))
    with pytest.raises(TypeError, match="not callable"):
        old_reader()
