"""Shared helpers: the float64 NumPy reference for the statistics (``actprobe.stats.reference``), small
real models, and the markers of slow tests."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from actprobe.models import paper_cnn  # noqa: F401  (the tests import it from here)
from actprobe.runfile.format import STATISTICS
from actprobe.stats.reference import mismatches, reference_statistics  # noqa: F401  (imported from here too)

# The README's test command names the data folder relative to the checkout; tests that run in other
# folders need it absolute.
if os.environ.get("ACTPROBE_DATA"):
    os.environ["ACTPROBE_DATA"] = str(Path(os.environ["ACTPROBE_DATA"]).resolve())

STATS = STATISTICS


@pytest.fixture(autouse=True)
def _fresh_dispatch_limit(monkeypatch):
    """Each test begins as a process of its own would: none of engine/dispatch.py's ``CHANGE_LIMIT`` used (the probes
    of earlier tests would otherwise move later ones to hooks, and which tests ran directly would depend on order)."""
    from actprobe.engine import dispatch

    if dispatch.DISPATCH is not None:
        monkeypatch.setattr(dispatch.DISPATCH, "changes", 0)


def assert_statistics_close(got: dict[str, float], want: dict[str, float], rtol: float = 1e-5) -> None:
    """Each statistic within ``rtol`` of the float64 reference (see ``actprobe.stats.reference``)."""
    wrong = mismatches(got, want, rtol)
    assert not wrong, "; ".join(wrong)


def train_steps(model: nn.Module, steps: int, *, probe=None, seed: int = 0, batch: int = 32,
                shape: tuple[int, ...] = (1, 28, 28), optimizer=None) -> list[torch.Tensor]:
    """A few SGD steps (or steps of ``optimizer``) on standardised random inputs; returns the losses (detached)."""
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        x = torch.randn((batch, *shape), generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if probe is not None:
            probe.step(loss=loss)
        losses.append(loss.detach())
    return losses


def one_recorded_step(path: Path, model: nn.Module | None = None, **options) -> nn.Module:
    """A run file of one recorded step (a forward and a backward, no optimizer) of ``model`` (default: a
    Linear(4, 2)), with the probe's ``options``; returns the model."""
    import actprobe

    model = model or nn.Sequential(nn.Linear(4, 2))
    with actprobe.Probe(model, path, **options) as probe:
        model(torch.randn(2, 4)).sum().backward()
        probe.step()
    return model


def assert_one_line_error(result, *fragments: str) -> None:
    """A CLI result that failed on bad input: exit 2, one ``error: …`` line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def bad_files(tmp_path):
    """Files that are not readable run files, each with the words its error must contain."""
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    newer = tmp_path / "newer.h5"
    with h5py.File(newer, "w") as f:
        f.attrs["format"] = "actprobe"
        f.attrs["format_version"] = 99
    return {
        "missing": (tmp_path / "nope.h5", "no such file"),
        "text": (text, "not an HDF5 file"),
        "other": (other, "not an actprobe run file"),
        "newer": (newer, "format_version 99"),
        "folder": (tmp_path, "is a folder"),
    }


def truncated_copy(run_file, tmp_path):
    """The first half of ``run_file``'s bytes, as ``cut.h5``."""
    data = run_file.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def format_doc_table(heading: str) -> list[list[str]]:
    """The rows of docs/FORMAT.md's table under ``## heading``, each a list of cells without backticks."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows]


def record_path(monkeypatch, path: str) -> bool:
    """Choose how the modules' calls reach a probe made after this: ``"direct"`` (engine/dispatch.py, the swapped
    ``Module._call_impl``, as in a process where torch.compile has compiled nothing yet, whatever other tests
    compiled) or ``"hooks"`` (PyTorch's hook path). True when ``"direct"`` is in effect (this build has it)."""
    from actprobe.engine import dispatch

    monkeypatch.setattr("actprobe.engine.hooks.dynamo_compiled", lambda: False)
    if path == "hooks" or dispatch.DISPATCH is None:
        monkeypatch.setattr("actprobe.engine.hooks.DISPATCH", None)
        return False
    monkeypatch.setattr(dispatch.DISPATCH, "compiling", False)
    return True
