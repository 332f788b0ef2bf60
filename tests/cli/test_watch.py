"""``actprobe watch``: it follows a file that another process writes, sees new rows appear, ends when the
writer closes the file, on Ctrl-C, and after a crashed writer went quiet."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from actprobe.cli.watch import WatchOptions, watch
from conftest import one_recorded_step

pytestmark = pytest.mark.slow  # real processes, a few seconds each

WRITER = """
import sys, time, torch
from torch import nn
import actprobe
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
with actprobe.Probe(model, sys.argv[1], flush_every=1) as probe:
    for step in range(int(sys.argv[2])):
        model(torch.randn(16, 4)).sum().backward()
        probe.step(loss=float(step))
        time.sleep(float(sys.argv[3]))
"""


def start_writer(tmp_path: Path, steps: int, pause: float) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "growing.h5"
    writer = subprocess.Popen([sys.executable, str(script), str(path), str(steps), str(pause)])
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:  # the file appears at its first recorded step
        time.sleep(0.05)
    return writer, path


def watcher(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "actprobe", "watch", str(path), "--interval", "0.2", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_new_rows_appear_and_the_watch_ends_when_the_writer_closes(tmp_path):
    writer, path = start_writer(tmp_path, 10, 0.3)
    watching = watcher(path)
    out, err = watching.communicate(timeout=120)
    assert writer.wait(timeout=60) == 0
    assert watching.returncode == 0, err
    lines = out.splitlines()
    counts = [int(line.split(": ")[1].split(" rows")[0]) for line in lines if " rows, last step " in line]
    assert len(set(counts)) >= 3 and counts == sorted(counts) and counts[-1] == 10, lines
    assert lines[-1] == f"{path}: its writer closed it; 10 recorded steps"


def test_ctrl_c_ends_the_watch_without_a_traceback(tmp_path):
    writer, path = start_writer(tmp_path, 200, 0.1)
    watching = watcher(path)
    try:
        assert " rows, last step " in watching.stdout.readline()
        watching.send_signal(signal.SIGINT)
        _, err = watching.communicate(timeout=30)
        assert watching.returncode == 130 and "Traceback" not in err
    finally:
        writer.kill()
        writer.wait()


def test_a_writer_that_died_is_given_up_on_after_idle_seconds(tmp_path):
    writer, path = start_writer(tmp_path, 200, 0.1)
    time.sleep(0.5)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    watching = watcher(path, "--idle", "1")
    out, _ = watching.communicate(timeout=60)
    assert watching.returncode == 0 and "no new rows for 1 s and no writer on this machine" in out


def test_in_a_terminal_the_summary_is_drawn_in_place(tmp_path):
    one_recorded_step(tmp_path / "done.h5")
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system=None)
    assert watch(tmp_path / "done.h5", WatchOptions(interval=0.1), console) == 0
    text = buffer.getvalue()
    assert "activations, step 0" in text and "its writer closed it; 1 recorded steps" in text


def test_a_watch_started_before_the_training_waits_for_the_file(tmp_path):
    path = tmp_path / "growing.h5"
    watching = watcher(path)
    time.sleep(1.0)
    writer, _ = start_writer(tmp_path, 4, 0.2)
    out, err = watching.communicate(timeout=120)
    assert writer.wait(timeout=60) == 0 and watching.returncode == 0, err
    lines = out.splitlines()
    assert "waiting for the file" in lines[0] and lines[-1].endswith("its writer closed it; 4 recorded steps")


def test_bad_intervals_are_one_line():
    from typer.testing import CliRunner

    from actprobe.cli import app
    from conftest import assert_one_line_error

    assert_one_line_error(CliRunner().invoke(app, ["watch", "x.h5", "--interval", "1e10"]), "at most 86400")
