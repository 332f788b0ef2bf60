"""The Probe end to end on real models: files, sites, options, and that training is untouched."""

from __future__ import annotations

import copy
import gc
import time
import warnings
import weakref

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.engine.sites import unit_dim as unit_dim_rule
from conftest import STATS, assert_statistics_close, paper_cnn, reference_statistics, train_steps


class Capture:
    """An independent recorder: forward hooks that keep float64 copies of every leaf output."""

    def __init__(self, model: nn.Module) -> None:
        self.outputs: list[tuple[str, nn.Module, torch.Tensor]] = []
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in model.named_modules()
                        if name and next(m.children(), None) is None]

    def _hook(self, name):
        def hook(module, args, output):
            if module.training and torch.is_grad_enabled():
                self.outputs.append((name, module, output.detach().clone()))
        return hook


def test_recorded_rows_match_reference_for_every_site_and_step(tmp_path):
    torch.manual_seed(0)
    model = paper_cnn()
    capture = Capture(model)
    with actprobe.Probe(model, tmp_path / "run.h5", flush_every=4) as probe:
        per_step = []
        gen = torch.Generator().manual_seed(0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(6):
            capture.outputs.clear()
            x, y = torch.randn(16, 1, 28, 28, generator=gen), torch.randint(0, 10, (16,), generator=gen)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward(); opt.step(); opt.zero_grad()
            probe.step(loss=loss, lr=0.1)
            per_step.append((list(capture.outputs), loss.item()))
    run = actprobe.read(tmp_path / "run.h5")
    assert run.sites == [str(i) for i in range(11)]
    assert run.site_module_types == [type(m).__name__ for m in model]
    assert run.step.tolist() == list(range(6))
    assert np.all(np.diff(run.time) >= 0)
    for t, (outputs, loss) in enumerate(per_step):
        assert run.scalars["loss"][t] == pytest.approx(loss, rel=1e-12)
        assert run.scalars["lr"][t] == 0.1
        for s, (name, module, out) in enumerate(outputs):
            want = reference_statistics(out, unit_dim_rule(module, out.shape, set()))
            got = {k: float(run.stats[k][t, s]) for k in STATS}
            assert_statistics_close(got, {k: float(np.float32(v)) for k, v in want.items()}, rtol=2e-6)


def test_training_is_bit_identical_with_and_without_probe(tmp_path):
    torch.manual_seed(0)
    plain = paper_cnn()
    probed = copy.deepcopy(plain)
    losses_plain = train_steps(plain, 5)
    with actprobe.Probe(probed, tmp_path / "run.h5") as probe:
        losses_probed = train_steps(probed, 5, probe=probe)
    assert all(torch.equal(a, b) for a, b in zip(losses_plain, losses_probed))
    for (name, a), (_, b) in zip(plain.named_parameters(), probed.named_parameters()):
        assert torch.equal(a, b), name
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(plain(x), probed(x))


def test_gradients_are_bit_identical(tmp_path):
    torch.manual_seed(1)
    plain = paper_cnn()
    probed = copy.deepcopy(plain)
    x = torch.randn(8, 1, 28, 28)
    plain(x).square().sum().backward()
    with actprobe.Probe(probed, tmp_path / "run.h5"):
        probed(x).square().sum().backward()
    for a, b in zip(plain.parameters(), probed.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_hooks_removed_and_model_collectable_after_block(tmp_path):
    model = paper_cnn()
    ref = weakref.ref(model)
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        train_steps(model, 2, probe=probe)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    del model
    gc.collect()
    assert ref() is None
    assert probe.closed


def shared_module_tuple_and_dict_model() -> nn.Module:
    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, torch.ones(3, dtype=torch.long), x - 1

    class Named(nn.Module):
        def forward(self, x):
            return {"a": x + 1, "mask": x > 0, "b": [x, x * 3]}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()
            self.pair = Pair()
            self.named = Named()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            x = self.act(self.lin(x))
            x = self.act(x - 0.5)
            a, _, b = self.pair(self.act(x))
            return self.named(a + b)["a"].sum()

    return Net()


def test_site_names_follow_the_contract(tmp_path):
    model = shared_module_tuple_and_dict_model()
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        for _ in range(2):
            model(torch.randn(5, 4)).backward()
            probe.step()
    run = actprobe.read(tmp_path / "run.h5")
    assert run.sites == ["lin", "act", "act#1", "act#2", "pair[0]", "pair[2]",
                         "named[a]", "named[b][0]", "named[b][1]"]
    assert run.site_module_types[:4] == ["Linear", "ReLU", "ReLU", "ReLU"]


def test_root_is_a_site_only_when_selected(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    with actprobe.Probe(model, tmp_path / "a.h5", select=["<root>", "1"]) as probe:
        model(torch.randn(2, 3)).sum().backward()
        probe.step()
    assert actprobe.read(tmp_path / "a.h5").sites == ["1", "<root>"]
    with pytest.raises(actprobe.SelectionError, match="has no submodules"):
        actprobe.Probe(nn.Linear(2, 2), tmp_path / "b.h5")


@pytest.mark.parametrize("select,expected", [
    ("*relu*", None),
    (nn.ReLU, ["1", "3", "5", "7"]),
    ("1", ["1"]),
    ([nn.Linear, "0"], ["0", "10"]),
    (lambda name, m: isinstance(m, nn.Conv2d) and m.out_channels >= 32, ["4", "6"]),
])
def test_select_globs_types_and_predicates(tmp_path, select, expected):
    model = paper_cnn()
    if expected is None:
        with pytest.raises(actprobe.SelectionError, match="matches no module"):
            actprobe.Probe(model, tmp_path / "run.h5", select=select)
        assert not (tmp_path / "run.h5").exists()
        return
    with actprobe.Probe(model, tmp_path / "run.h5", select=select) as probe:
        train_steps(model, 1, probe=probe)
    assert actprobe.read(tmp_path / "run.h5").sites == expected


def test_train_only_skips_eval_and_no_grad_forwards(tmp_path):
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        model.eval()
        model(torch.randn(2, 1, 28, 28))
        probe.step()  # nothing recorded: no row, and the sites are not fixed yet
        model.train()
        with torch.no_grad():
            model(torch.randn(2, 1, 28, 28))
        probe.step()
        train_steps(model, 2, probe=probe)
    run = actprobe.read(tmp_path / "run.h5")
    assert run.step.tolist() == [2, 3]
    assert run.stats["count"][:, 0].tolist() == [32 * 8 * 14 * 14] * 2  # batch 32, not the eval batch of 2


def test_train_only_false_records_eval_forwards(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with actprobe.Probe(model, tmp_path / "run.h5", train_only=False) as probe:
        model.eval()
        with torch.no_grad():
            model(torch.randn(5, 3))
        probe.step()
    assert actprobe.read(tmp_path / "run.h5").stats["count"][0].tolist() == [20, 20]


def test_every_k_steps(tmp_path):
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "run.h5", every=3, flush_every=4) as probe:
        train_steps(model, 10, probe=probe)
    run = actprobe.read(tmp_path / "run.h5")
    assert run.step.tolist() == [0, 3, 6, 9]
    assert run.attrs["every"] == 3


def test_gradient_accumulation_merges_forwards_of_one_step(tmp_path):
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
    xs = [torch.randn(7, 6) * (i + 1) for i in range(3)]
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        for x in xs:
            model(x).sum().backward()
        probe.step()
    run = actprobe.read(tmp_path / "run.h5")
    with torch.no_grad():
        lin = torch.cat([model[0](x) for x in xs])
    assert run.sites == ["0", "1"]
    want = reference_statistics(lin, -1)
    got = {k: float(run.stats[k][0, 0]) for k in STATS}
    assert_statistics_close(got, {k: float(np.float32(v)) for k, v in want.items()}, rtol=2e-6)


def test_site_missing_in_a_later_step_gets_nan(tmp_path):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x, use_b=True):
            x = self.a(x)
            return self.b(x) if use_b else x

    model = Branchy()
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        model(torch.randn(4, 3)).sum().backward(); probe.step()
        model(torch.randn(4, 3), use_b=False).sum().backward(); probe.step()
    run = actprobe.read(tmp_path / "run.h5")
    assert run.sites == ["a", "b"]
    assert np.isfinite(run.stats["mean"][1, 0])
    assert all(np.isnan(run.stats[k][1, 1]) for k in STATS)


def test_new_sites_after_the_first_step_are_ignored_with_a_warning(tmp_path):
    act = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), act)
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        model(torch.randn(2, 3)).sum().backward(); probe.step()
        with pytest.warns(actprobe.ActprobeWarning, match="first appeared after"):
            act(model(torch.randn(2, 3))).sum().backward(); probe.step()
    assert actprobe.read(tmp_path / "run.h5").sites == ["0", "1"]


def test_scalars_numbers_and_tensors(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3))
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        for i in range(3):
            out = model(torch.randn(2, 3)).sum()
            out.backward()
            probe.step(loss=out, step_size=np.float32(0.5), count=torch.tensor(i), flag=True)
        model(torch.randn(2, 3)).sum().backward()
        probe.step(extra=1.0)  # a name first passed at a later step gets its column then
        with pytest.warns(actprobe.ActprobeWarning, match="not a number"):
            model(torch.randn(2, 3)).sum().backward()
            probe.step(loss="high")
    run = actprobe.read(tmp_path / "run.h5")
    assert sorted(run.scalars) == ["count", "extra", "flag", "loss", "step_size"]
    assert run.scalars["count"].tolist()[:3] == [0, 1, 2]
    assert np.isnan(run.scalars["count"][3])
    np.testing.assert_array_equal(run.scalars["extra"], [np.nan, np.nan, np.nan, 1.0, np.nan])
    assert run.scalars["step_size"][0] == 0.5 and run.scalars["flag"][0] == 1.0


def test_a_scalar_passed_every_tenth_step_is_kept_at_those_steps_only(tmp_path):
    """A validation metric every 10 steps, one first passed at step 15, and more names than fit: the file
    has each value at its own step and NaN at the others, whatever flushes fell between."""
    from actprobe.engine.staging import MAX_SCALARS

    model = nn.Sequential(nn.Linear(3, 3))
    with actprobe.Probe(model, tmp_path / "run.h5", flush_every=7) as probe:
        for step in range(40):
            model(torch.randn(2, 3)).sum().backward()
            extra = {"val_acc": step / 100} if step % 10 == 0 else {}
            if step >= 15:
                extra["late"] = torch.tensor(float(step))
            if step == 30:
                with pytest.warns(actprobe.ActprobeWarning, match="most scalar columns"):
                    probe.step(loss=1.0, **extra, **{f"m{k}": k for k in range(MAX_SCALARS)})
                continue
            probe.step(loss=1.0, **extra)
    run = actprobe.read(tmp_path / "run.h5")
    acc = run.scalars["val_acc"]
    assert np.flatnonzero(~np.isnan(acc)).tolist() == [0, 10, 20, 30] and acc[20] == 0.2
    late = run.scalars["late"]
    assert np.isnan(late[:15]).all() and late[15:].tolist() == list(range(15, 40))
    assert len(run.scalars) == MAX_SCALARS and run.scalars["m0"][30] == 0 and np.isnan(run.scalars["m0"][29])


def test_scalar_names_that_hdf5_would_read_as_paths(tmp_path):
    """`train/loss` (Lightning's and TensorBoard's habit), `.`, `..`, `%`: each keeps its own column and
    reads back under its own name."""
    model = nn.Sequential(nn.Linear(3, 3))
    names = ["train/loss", "lr/group0/x", ".", "..", "/abs", "100%", "a%2Fb", "plain"]
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        for step in range(3):
            model(torch.randn(2, 3)).sum().backward()
            probe.step(**{name: float(k + 10 * step) for k, name in enumerate(names)} if step else {"plain": 0.0})
    run = actprobe.read(tmp_path / "run.h5")
    assert sorted(run.scalars) == sorted(names)
    for k, name in enumerate(names[:-1]):
        np.testing.assert_array_equal(run.scalars[name], [np.nan, k + 10, k + 20])
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert f["scalars/train%2Floss"].attrs["name"] == "train/loss" and "name" not in f["scalars/plain"].attrs


def test_meta_and_attributes(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3))
    meta = {"recipe": "toy", "seed": 3, "lr": 0.4, "layers": [8, 16, 32], "tags": ["a", "b"]}
    with actprobe.Probe(model, tmp_path / "run.h5", meta=meta, near_zero_eps=0.1, dead_eps=1e-4) as probe:
        model(torch.randn(2, 3)).sum().backward(); probe.step()
    attrs = actprobe.read(tmp_path / "run.h5").attrs
    assert attrs["recipe"] == "toy" and attrs["seed"] == 3 and attrs["lr"] == 0.4
    assert list(attrs["layers"]) == [8, 16, 32] and list(attrs["tags"]) == ["a", "b"]
    assert attrs["near_zero_eps"] == 0.1 and attrs["dead_eps"] == 1e-4
    assert attrs["format"] == "actprobe" and attrs["format_version"] == 1


@pytest.mark.parametrize("kwargs,message", [
    ({"every": 0}, "every must be a positive integer"),
    ({"flush_every": 1.5}, "flush_every must be a positive integer"),
    ({"near_zero_eps": -1}, "near_zero_eps must be a non-negative number"),
    ({"flush_seconds": float("nan")}, "flush_seconds must be a non-negative number"),
    ({"train_only": "yes"}, "train_only must be True or False"),
    ({"meta": {"format": "x"}}, "reserved"),
    ({"meta": {"obj": object()}}, "meta\\['obj'\\] has type object"),
    ({"select": [3]}, "select items must be"),
    ({"every": 2 ** 63}, "every must be at most 2\\*\\*62"),  # the probe's fields are 64-bit
    ({"hist_every": 2 ** 63}, "hist_every must be at most 2\\*\\*62"),
    ({"flush_seconds": 10 ** 400}, "flush_seconds must be a number within float64's range"),
])
def test_bad_options_raise_option_error_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(actprobe.OptionError, match=message):
        actprobe.Probe(paper_cnn(), tmp_path / "run.h5", **kwargs)
    assert not (tmp_path / "run.h5").exists() and not (tmp_path / "run.h5.lock").exists()


def test_existing_file_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "run.h5"
    model = nn.Sequential(nn.Linear(3, 3))
    with actprobe.Probe(model, path) as probe:
        model(torch.randn(2, 3)).sum().backward(); probe.step()
    before = path.read_bytes()
    with pytest.raises(actprobe.RunFileError, match="already exists"):
        actprobe.Probe(model, path)
    assert path.read_bytes() == before
    with actprobe.Probe(model, path, overwrite=True) as probe:
        for _ in range(3):
            model(torch.randn(2, 3)).sum().backward(); probe.step()
    assert actprobe.read(path).rows == 3


def test_second_writer_in_the_same_process_is_refused(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3))
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        with pytest.raises(actprobe.RunFileError, match="being written by another probe"):
            actprobe.Probe(nn.Sequential(nn.Linear(2, 2)), tmp_path / "run.h5", overwrite=True)
        model(torch.randn(2, 3)).sum().backward(); probe.step()
    assert actprobe.read(tmp_path / "run.h5").rows == 1
    assert not (tmp_path / "run.h5.lock").exists()


def test_a_failing_hook_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    model = paper_cnn()
    reference = copy.deepcopy(model)
    with actprobe.Probe(model, tmp_path / "run.h5", flush_every=100) as probe:
        train_steps(model, 4, probe=probe, seed=1)  # staged, not yet flushed when the hook breaks

        def broken(*args, **kwargs):
            raise RuntimeError("kernel exploded")
        monkeypatch.setattr(type(probe._recorder.kernel), "__call__", broken)  # every recorded call now raises …
        monkeypatch.setattr(type(probe._recorder.kernel), "lane", lambda *args: None)  # … lanes included
        probe._recorder._lane_table.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_steps(model, 3, probe=probe, seed=2)
    messages = [str(w.message) for w in caught if issubclass(w.category, actprobe.ActprobeWarning)]
    assert len(messages) == 1 and "kernel exploded" in messages[0]
    assert actprobe.read(tmp_path / "run.h5").rows == 4
    train_steps(reference, 4, seed=1)
    train_steps(reference, 3, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))


def test_a_failing_writer_warns_and_training_goes_on(tmp_path, monkeypatch):
    from actprobe.runfile import storage

    calls = {"n": 0}
    original = storage.RunFileWriter.append

    def append(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        original(self, *args, **kwargs)
    monkeypatch.setattr(storage.RunFileWriter, "append", append)
    model = paper_cnn()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with actprobe.Probe(model, tmp_path / "run.h5", flush_every=2) as probe:
            for _ in range(5):
                train_steps(model, 1, probe=probe)
                probe.flush(wait=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, actprobe.ActprobeWarning)]
    assert len(messages) == 1 and "disk full" in messages[0]
    run = actprobe.read(tmp_path / "run.h5")
    assert run.rows == 1
    assert probe.error is not None


def test_flush_seconds_zero_commits_every_step(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3))
    path = tmp_path / "run.h5"
    with actprobe.Probe(model, path, flush_seconds=0) as probe:
        for i in range(3):
            model(torch.randn(2, 3)).sum().backward()
            probe.step()
            probe._sink.wait()
            assert actprobe.read(path).rows == i + 1


def test_flush_seconds_commits_during_unrecorded_steps(tmp_path):
    """Rows staged at a recorded step reach the file once flush_seconds have passed, at an unrecorded step."""
    model = nn.Sequential(nn.Linear(3, 3))
    path = tmp_path / "run.h5"
    with actprobe.Probe(model, path, every=100, flush_every=1000, flush_seconds=0.2) as probe:
        model(torch.randn(2, 3)).sum().backward()
        probe.step()  # step 0, recorded and staged; steps 1 … 99 are not recorded
        probe._sink.wait()
        assert actprobe.read(path).rows == 0
        time.sleep(0.3)
        model(torch.randn(2, 3)).sum().backward()
        probe.step()
        probe._sink.wait()
        assert actprobe.read(path).rows == 1


def test_step_after_close_warns(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3))
    probe = actprobe.Probe(model, tmp_path / "run.h5")
    probe.close()
    probe.close()
    with pytest.warns(actprobe.ActprobeWarning, match="after the probe was closed"):
        probe.step()


def test_parent_folders_are_created(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3))
    with actprobe.Probe(model, tmp_path / "a" / "b" / "run.h5") as probe:
        model(torch.randn(2, 3)).sum().backward(); probe.step()
    assert actprobe.read(tmp_path / "a" / "b" / "run.h5").rows == 1


def test_nothing_recorded_leaves_no_file(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3))
    with pytest.warns(actprobe.ActprobeWarning, match="no selected module was called"):
        with actprobe.Probe(model, tmp_path / "run.h5"):
            pass
    assert not (tmp_path / "run.h5").exists()


def test_file_is_chunked_by_the_flush_interval_and_at_least_64_rows(tmp_path):
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "run.h5", flush_every=6, every=2) as probe:
        train_steps(model, 7, probe=probe)
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert f["stats/mean"].chunks[0] == 64 and f["step"].chunks == (64,)  # 3 rows per flush: 64
    with actprobe.Probe(model, tmp_path / "long.h5", flush_every=200, every=2) as probe:
        train_steps(model, 3, probe=probe)
    with h5py.File(tmp_path / "long.h5", "r") as f:
        assert f["stats/mean"].chunks[0] == 100 and f["step"].chunks == (100,)


def test_unit_dimension_rule(tmp_path):
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 6, 3, padding=1)  # (N, C, L)
            self.act = nn.ReLU()  # same shape as the conv output: units along dim 1
            self.proj = nn.Linear(10, 5)  # (N, T, F): units along the last dim
            self.norm = nn.LayerNorm(5)

        def forward(self, x):
            h = self.act(self.conv(x))  # (4, 6, 10)
            return self.norm(self.proj(h)).sum()

    model = Mixed()
    with actprobe.Probe(model, tmp_path / "run.h5") as probe:
        x = torch.randn(4, 3, 10)
        model(x).backward()
        probe.step()
    run = actprobe.read(tmp_path / "run.h5")
    assert dict(zip(run.sites, run.site_unit_dims.tolist())) == {"conv": 1, "act": 1, "proj": -1, "norm": -1}
    with torch.no_grad():
        h = model.act(model.conv(x))
    got = {k: float(run.stats[k][0, 1]) for k in STATS}
    want = reference_statistics(h, 1)
    assert_statistics_close(got, {k: float(np.float32(v)) for k, v in want.items()}, rtol=2e-6)


@pytest.mark.parametrize("ring_bytes", [64 << 20, 0])  # batched merging, and one step at a time
def test_rows_stay_right_when_the_set_of_firing_sites_changes(tmp_path, monkeypatch, ring_bytes):
    from actprobe.stats import merge as reduce

    monkeypatch.setattr(reduce, "RING_BYTES", ring_bytes)

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(6, 6), nn.Tanh()

        def forward(self, x, pattern):
            h = self.a(x)
            if pattern & 1:
                h = self.b(h)
            if pattern & 2:
                h = self.c(h) + self.c(h * 2)  # two calls: c and c#1
            return h.sum()

    model = Branchy()
    patterns = [3, 3, 1, 0, 3, 2, 2, 3, 1, 3]
    expected = []
    with actprobe.Probe(model, tmp_path / "run.h5", flush_every=100) as probe:
        for step, pattern in enumerate(patterns):
            x = torch.randn(5, 4) * (step + 1)
            model(x, pattern).backward()
            probe.step()
            with torch.no_grad():
                h = model.a(x)
                row = {"a": h}
                if pattern & 1:
                    h = row["b"] = model.b(h)
                if pattern & 2:
                    row["c"], row["c#1"] = model.c(h), model.c(h * 2)
            expected.append(row)
    run = actprobe.read(tmp_path / "run.h5")
    assert run.sites == ["a", "b", "c", "c#1"]
    for t, row in enumerate(expected):
        for s, name in enumerate(run.sites):
            got = {k: float(run.stats[k][t, s]) for k in STATS}
            if name not in row:
                assert all(np.isnan(v) for v in got.values()), (t, name)
                continue
            want = {k: float(np.float32(v)) for k, v in reference_statistics(row[name], -1).items()}
            assert_statistics_close(got, want, rtol=2e-6)


@pytest.mark.slow
def test_a_probe_never_closed_is_kept_alive_by_its_hooks_and_committed_at_exit(tmp_path):
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "run.h5"
    script = textwrap.dedent(f"""
        import gc, weakref, torch, actprobe
        from torch import nn
        model = nn.Sequential(nn.Linear(3, 3))
        probe = weakref.ref(actprobe.Probe(model, {str(path)!r}))  # no strong reference, no close()
        gc.collect()
        for _ in range(3):
            model(torch.randn(2, 3)).sum().backward()
            probe().step()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert actprobe.read(path).rows == 3
