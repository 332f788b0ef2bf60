"""The single-writer lock: keyed on the real file, and never released by a forked child."""

from __future__ import annotations

import atexit
import os

import pytest
import torch
from torch import nn

import actprobe
from actprobe.errors import RunFileError
from actprobe.runfile.lock import lock_path, writer_active


def _steps(model, probe, n, backward=True):
    for _ in range(n):
        out = model(torch.randn(4, 3))
        if backward:  # (a forked child does not: once torch.compile has run a backward in this process, autograd
            out.sum().backward()  # refuses to run in a child made with fork, "Autograd-and-Fork")
        probe.step()


def test_a_forked_child_that_exits_leaves_the_parents_lock_and_file_alone(tmp_path):
    path = tmp_path / "run.h5"
    model = nn.Sequential(nn.Linear(3, 2))
    with actprobe.Probe(model, path, flush_every=2) as probe:
        _steps(model, probe, 3)
        pid = os.fork()
        if pid == 0:  # the child runs its atexit handlers, as sys.exit would (without unwinding into pytest)
            code = 1
            try:
                _steps(model, probe, 2, backward=False)  # the parent's probe records nothing here
                probe.close()
                code = 0
            finally:
                atexit._run_exitfuncs()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert lock_path(path).exists() and writer_active(path)
        with pytest.raises(RunFileError, match="being written by another probe"):
            actprobe.Probe(nn.Sequential(nn.Linear(3, 2)), path, overwrite=True)
        _steps(model, probe, 3)
    run = actprobe.read(path)
    assert run.rows == 6 and run.step.tolist() == list(range(6)) and run.closed
    assert not lock_path(path).exists()


def test_a_second_writer_through_a_symbolic_link_is_refused(tmp_path):
    path = tmp_path / "run.h5"
    (tmp_path / "other").mkdir()
    link = tmp_path / "other" / "link.h5"
    link.symlink_to(path)
    model = nn.Sequential(nn.Linear(3, 2))
    with actprobe.Probe(model, path) as probe:
        _steps(model, probe, 2)
        with pytest.raises(RunFileError, match="being written by another probe"):
            actprobe.Probe(nn.Sequential(nn.Linear(3, 2)), link, overwrite=True)
        assert writer_active(link)
    assert actprobe.read(link).rows == 2


def test_a_dangling_link_shares_the_lock_of_the_file_it_will_name(tmp_path):
    path = tmp_path / "run.h5"
    link = tmp_path / "link.h5"
    link.symlink_to(path)
    assert lock_path(link) == lock_path(path)
