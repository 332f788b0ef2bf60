"""Crash safety: a writer killed with SIGKILL at random moments leaves a file that opens and holds
every row up to its last flush; a second writer on the same path is refused."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import actprobe

pytestmark = pytest.mark.slow  # processes killed at random moments

WORKER = Path(__file__).with_name("_writer_process.py")
KILLS = 16


def _start(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(path), *args], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(proc: subprocess.Popen, word: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(word):
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode} before '{word}'")
    raise AssertionError(f"worker did not print '{word}' in {timeout} s")


@pytest.mark.parametrize("attempt", range(KILLS))
def test_sigkill_at_random_moment_keeps_every_committed_row(tmp_path, attempt):
    """Kill after a random number of commits plus a random delay, so that kills land anywhere in the
    write cycle (between steps, mid-write, between the two flushes of a commit)."""
    rng = random.Random(attempt)
    path = tmp_path / "run.h5"
    proc = _start(path)
    _wait_for(proc, "ready")
    seen = [proc.stdout.readline() for _ in range(rng.randint(1, 20))]
    time.sleep(rng.uniform(0, 0.03))
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    committed = [line.split() for line in seen + out.splitlines() if line.startswith("committed")]
    assert committed, "the worker committed nothing before it was killed"
    last_rows, last_loss = int(committed[-1][1]), float(committed[-1][2])
    run = actprobe.read(path)  # opens, although the writer died holding it
    assert run.rows >= last_rows
    assert run.step.tolist() == list(range(run.rows))
    assert run.scalars["loss"][last_rows - 1] == last_loss
    for name, values in run.stats.items():
        assert values.shape == (run.rows, 3), name
        assert np.isfinite(values[:, :]).all() or name == "dead", name
    # a plain h5py reader that follows docs/FORMAT.md opens it too
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        assert f["step"].shape[0] == run.rows


def test_second_writer_in_another_process_is_refused_and_reader_sees_rows(tmp_path):
    path = tmp_path / "run.h5"
    proc = _start(path, "hold")
    try:
        _wait_for(proc, "holding")
        from torch import nn

        with pytest.raises(actprobe.RunFileError, match="being written by another probe"):
            actprobe.Probe(nn.Sequential(nn.Linear(2, 2)), path, overwrite=True)
        run = actprobe.read(path)  # read while the writer still holds the file
        assert run.rows == 3 and run.step.tolist() == [0, 1, 2]
    finally:
        proc.kill()
        proc.communicate()
    # the dead writer's lock is gone with it: a new writer may replace the file
    from torch import nn
    import torch

    model = nn.Sequential(nn.Linear(2, 2))
    with actprobe.Probe(model, path, overwrite=True) as probe:
        model(torch.randn(3, 2)).sum().backward()
        probe.step()
    assert actprobe.read(path).rows == 1
