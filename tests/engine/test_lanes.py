"""A site's lane (its outputs' C kernel call worked out once, ``Recorder.observe``) records exactly what the
general path records, and steps whose outputs change shape, strides or dtype fall back to it correctly."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch
from torch import nn

import actprobe
from actprobe.engine import eager
from actprobe.stats import c_backend
from conftest import STATS, assert_statistics_close, paper_cnn, record_path, reference_statistics, train_steps


class Shifting(nn.Module):
    """Returns its output as it is, transposed, in column-major order (the same shape, other strides), in
    float64, or as a slice, by step: outputs of one site that the lane made at step 1 does not fit."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 6)
        with torch.no_grad():  # unit 0 is dead (constant): read with the wrong strides, no unit would be
            self.linear.weight[0] = 0.0
            self.linear.bias[0] = 0.5
        self.kind = "plain"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.kind == "transposed":
            return y.t()
        if self.kind == "column-major":
            return y.t().contiguous().t()
        if self.kind == "double":
            return y.double()
        if self.kind == "sliced":
            return y[:, :4]
        return y


KINDS = ["plain", "plain", "column-major", "plain", "double", "transposed", "double", "sliced", "plain", "plain"]
BATCHES = [16, 16, 16, 16, 16, 16, 9, 16, 16, 5]


def test_rows_follow_outputs_whose_shape_strides_and_dtype_change(tmp_path):
    torch.manual_seed(0)
    outer = nn.Sequential(Shifting(), nn.Identity())
    model = outer[0]
    want = []
    with actprobe.Probe(outer, tmp_path / "r.h5", select=lambda name, module: name in ("0", "1")) as probe:
        for step, (kind, batch) in enumerate(zip(KINDS, BATCHES)):
            model.kind = kind
            x = torch.randn(batch, 6, generator=torch.Generator().manual_seed(step))
            out = outer(x)
            want.append(reference_statistics(out, -1))
            out.float().sum().backward()
            probe.step()
            if step == 1:  # the second step made the lanes that later steps try first
                assert set(probe._recorder._lane_table) == {"0", "1"}
    run = actprobe.read(tmp_path / "r.h5")
    assert run.rows == len(KINDS)
    for row, reference in enumerate(want):
        for column in range(2):
            assert_statistics_close({name: float(run.stats[name][row, column]) for name in STATS}, reference)


def test_lanes_and_the_general_path_write_the_same_bits(tmp_path):
    """A histogram step takes the general path for every site: with histograms every step, no lane is used
    at all. The statistics must be equal bit for bit to those of the same training with lanes."""
    stats = {}
    for hist_every in (0, 1):
        torch.manual_seed(0)
        model = paper_cnn()
        with actprobe.Probe(model, tmp_path / f"h{hist_every}.h5", hist_every=hist_every) as probe:
            train_steps(model, 4, probe=probe, seed=3)
            assert bool(probe._recorder._lane_table) == (hist_every == 0)
        run = actprobe.read(tmp_path / f"h{hist_every}.h5")
        stats[hist_every] = {name: np.asarray(run.stats[name]) for name in STATS}
    for name in STATS:
        np.testing.assert_array_equal(stats[0][name], stats[1][name], err_msg=name)


def test_a_site_called_twice_records_both_calls(tmp_path):
    """The first call of a module in a forward takes its lane, the second (``name#1``) the general path."""
    torch.manual_seed(0)
    linear = nn.Linear(5, 5)
    model = nn.Sequential(linear, nn.ReLU(), linear)
    want = []
    with actprobe.Probe(model, tmp_path / "r.h5") as probe:
        for step in range(3):
            x = torch.randn(7, 5, generator=torch.Generator().manual_seed(step))
            with torch.no_grad():
                first = linear(x)
                second = linear(torch.relu(first))
            want.append((first, second))
            model(x).sum().backward()
            probe.step()
    run = actprobe.read(tmp_path / "r.h5")
    assert run.sites == ["0", "1", "0#1"]
    for row, (first, second) in enumerate(want):
        for column, tensor in ((0, first), (2, second)):
            got = {name: float(run.stats[name][row, column]) for name in STATS}
            assert_statistics_close(got, reference_statistics(tensor, -1))


def _counting_calls(probe) -> list[int]:
    """Counts the module calls that reach the recorder through the Python hooks, per step (the hooks in C
    record a site's lane without them)."""
    counts = [0]
    observe = probe._engine._on_call

    def counted(*args):
        counts[-1] += 1
        return observe(*args)

    probe._engine._on_call = counted
    return counts


def test_hooks_in_c_record_what_the_python_hooks_record(tmp_path, monkeypatch):
    """From the third step on, every site of the paper CNN is recorded by its hook in C, with no Python call,
    called by the swapped Module._call_impl (engine/dispatch.py) or by PyTorch's hook path; the file is the same,
    bit for bit, as the one made by the Python hooks alone."""
    stats, calls = {}, {}
    for kind in ("c direct", "c", "python"):
        direct = record_path(monkeypatch, "direct" if kind == "c direct" else "hooks")
        if kind == "python":
            monkeypatch.setattr(c_backend, "lane_hook", None)
        torch.manual_seed(0)
        model = paper_cnn()
        with actprobe.Probe(model, tmp_path / f"{kind}.h5") as probe:
            hook_types = {type(hook).__name__ for module in model.modules() for hook in module._forward_hooks.values()}
            counts = _counting_calls(probe)
            for step in range(5):
                train_steps(model, 1, probe=probe, seed=step)
                counts.append(0)
        calls[kind], stats[kind] = (hook_types, counts[:5]), actprobe.read(tmp_path / f"{kind}.h5").stats
    if direct:
        assert calls["c direct"] == (set(), [11, 11, 0, 0, 0])  # no module holds a forward hook
    assert calls["c"] == ({"Hook"}, [11, 11, 0, 0, 0])  # step 0 found the sites, step 1 made the lanes
    assert calls["python"] == ({"ProbeHook"}, [11] * 5)  # a Python function in a picklable holder
    for name in STATS:
        for kind in ("c direct", "c"):
            np.testing.assert_array_equal(np.asarray(stats[kind][name]), np.asarray(stats["python"][name]),
                                          err_msg=f"{kind}: {name}")


def test_hooks_in_c_leave_out_what_train_only_and_idle_steps_leave_out(tmp_path):
    """Forwards in eval mode, without gradients, on an unrecorded step (the hook stays, inactive, beside the
    user's own hook) or captured… none of them reaches the row: only the recorded step's training forward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    model[0].register_forward_hook(lambda module, args, output: None)  # keeps the probe's hook in place
    want = []
    with actprobe.Probe(model, tmp_path / "t.h5", every=2) as probe:
        counts = _counting_calls(probe)
        for step in range(7):
            gen = torch.Generator().manual_seed(step)
            x, other = torch.randn(5, 6, generator=gen), torch.randn(5, 6, generator=gen) * 10  # lanes would take it
            if step >= 2:  # the lanes are made: what the C hooks must leave out
                with torch.no_grad():
                    model(other)
                model.eval()
                model(other)
                model.train()
            out = model(x)
            with torch.no_grad():  # not through the module: its hook would count it
                want.append(nn.functional.linear(x, model[0].weight, model[0].bias))
            out.sum().backward()
            probe.step()
            counts.append(0)
        skipped = probe._engine.skipped
    assert counts[:7] == [3, 0, 3, 0, 0, 0, 0]  # step 2 made the lanes; at steps 4 and 6 every site is in C
    assert skipped == 3 * 2 * 3  # two forwards of 3 modules at steps 2, 4 and 6 (at 3 and 5 the hooks are inactive)
    run = actprobe.read(tmp_path / "t.h5")
    assert run.step.tolist() == [0, 2, 4, 6]
    for row, step in enumerate(run.step):
        got = {name: float(run.stats[name][row, 0]) for name in STATS}
        assert_statistics_close(got, reference_statistics(want[step], -1))


def test_a_hook_in_c_leaves_calls_under_torch_compile_to_the_python_hook(tmp_path):
    """While Dynamo's frame-evaluation callback is set (a graph break of compiled code), reading the output may
    call Python (a TorchFunctionMode's ``__torch_function__``) that the callback would compile: the hook in C
    hands such a call to the Python hook, which guards itself. Here a stand-in getter says a callback is set."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
    with actprobe.Probe(model, tmp_path / "f.h5") as probe:
        counts = _counting_calls(probe)
        for step in range(4):
            if step == 3:
                c_backend.set_frame_callback(lambda: "a callback")
            try:
                model(torch.randn(5, 6)).sum().backward()
            finally:
                c_backend.set_frame_callback(eager.frame_callback)
            probe.step()
            counts.append(0)
    assert counts[:4] == [2, 2, 0, 2]  # step 3: both calls through the Python hook, which recorded them
    assert actprobe.read(tmp_path / "f.h5").rows == 4


_REPLACED_LANES = """
import threading, warnings, torch, actprobe
torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.Tanh())
x = torch.randn(256, 64)  # 262,144 values: the kernel lets other threads run
stop = False
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    with torch.no_grad(), actprobe.Probe(model, {path!r}, train_only=False) as probe:
        model(x); probe.step(); model(x); probe.step()
        table = probe._recorder._lane_table
        def replace():
            while not stop:
                for name in ("0", "1"):
                    table[name] = tuple(table[name][:11]) + ([None],)  # what Recorder._make_lane does
        thread = threading.Thread(target=replace)
        thread.start()
        try:
            for step in range(150):
                model(x)
                probe.step()
        finally:
            stop = True
            thread.join()
assert probe.error is None, probe.error
print("ok", actprobe.read({path!r}).rows)
"""


def test_a_lane_replaced_by_another_thread_during_the_kernel_is_not_freed_under_it(tmp_path):
    """Another thread may replace a site's lane while the kernel of a hook in C lets it run (a forward of another
    shape on that thread makes the site's lane anew): the hook holds the lane until it is done. Before, the lane
    was freed under it and the process crashed (twice in two runs of this script)."""
    script = _REPLACED_LANES.format(path=str(tmp_path / "threads.h5"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONMALLOC": "debug"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", "152"]
