"""Distributed runs without a launcher: probes that take their rank from torchrun's environment variables,
several in one process, each recording its share of a batch. The merged run must equal the float64
reference of the whole batch; its rank view, scalars, histograms and parameters follow the documented rules."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.errors import FormatError, OptionError
from conftest import mismatches, one_recorded_step, paper_cnn, reference_statistics

UNIT_DIM = {1: 1, -1: -1, 0: None}


def _record(folder, monkeypatch, world: int, batches: list[list[torch.Tensor]], **options):
    """Rank r records a copy of one model on batches[r][step]; returns each rank's outputs per (step, site)."""
    monkeypatch.setenv("WORLD_SIZE", str(world))
    outputs = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        torch.manual_seed(0)
        model = paper_cnn()
        seen: dict[tuple[int, str], torch.Tensor] = {}
        step = [0]
        for name, module in model.named_modules():
            if not list(module.children()):
                module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__((step[0], name), o.detach().clone()))
        with actprobe.Probe(model, folder, **options) as probe:
            assert probe.file == folder / "segment-0" / f"rank-{rank}.h5"
            for s, x in enumerate(batches[rank]):
                step[0] = s
                loss = model(x).logsumexp(1).mean()
                loss.backward()
                probe.step(loss=loss, rank=rank, **({"rank0_only": 7.0} if rank == 0 else {}))
        outputs.append(seen)
    return outputs


def _check_against_reference(run, outputs) -> None:
    checked = 0
    for row, step in enumerate(run.step):
        for column, site in enumerate(run.sites):
            parts = [seen[(int(step), site)] for seen in outputs if (int(step), site) in seen]
            want = reference_statistics(torch.cat(parts), UNIT_DIM[int(run.site_unit_dims[column])])
            got = {name: float(run.stats[name][row, column]) for name in actprobe.STATISTICS}
            assert not mismatches(got, want, 1e-5), (step, site, mismatches(got, want, 1e-5))
            checked += 1
    assert checked == run.rows * len(run.sites) > 0


@pytest.mark.parametrize("world", [2, 3])
def test_the_merged_run_is_the_float64_reference_of_the_global_batch(tmp_path, monkeypatch, world):
    gen = torch.Generator().manual_seed(world)
    batches = [[torch.randn(5 + r, 1, 28, 28, generator=gen) * (1 + r) for _ in range(3)] for r in range(world)]
    outputs = _record(tmp_path / "run.h5", monkeypatch, world, batches)
    run = actprobe.read(tmp_path / "run.h5")
    assert run.distributed and run.attrs["ranks"] == world and run.rows == 3 and not run.notes
    _check_against_reference(run, outputs)
    # each rank's own file is an ordinary run file: that rank's values alone
    for rank in range(world):
        alone = actprobe.read(tmp_path / "run.h5", rank=rank)
        assert not alone.distributed and alone.attrs["rank"] == rank and alone.attrs["distributed"] is True
        assert alone.attrs["world_size"] == world and alone.attrs["segment"] == 0
        _check_against_reference(alone, [outputs[rank]])
    # scalars: the mean of what the ranks passed
    np.testing.assert_allclose(run.scalars["rank"], np.full(3, (world - 1) / 2))
    np.testing.assert_array_equal(run.scalars["rank0_only"], np.full(3, 7.0))  # the ranks that passed it


def test_mean_ten_thousand_times_the_std_across_ranks(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    # each rank's values: a different offset around 1e4, so the ranks' means differ by far more than the std
    batches = [[torch.randn(6, 1, 28, 28, generator=gen) + 1e4 + 0.5 * r] for r in range(3)]
    outputs = _record(tmp_path / "run", monkeypatch, 3, batches)
    _check_against_reference(actprobe.read(tmp_path / "run"), outputs)


def test_rows_are_the_steps_every_rank_committed(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(1)
    batches = [[torch.randn(4, 1, 28, 28, generator=gen) for _ in range(steps)] for steps in (4, 2)]
    outputs = _record(tmp_path / "run", monkeypatch, 2, batches)
    run = actprobe.read(tmp_path / "run")
    assert run.rows == 2 and list(run.step) == [0, 1]
    assert run.notes == ("rank 0 committed 2 rows that not every rank has (read it alone with --rank 0)",)
    _check_against_reference(run, outputs)


def test_replicated_parameters_count_once_and_gradients_merge(tmp_path, monkeypatch):
    """DDP keeps the same weights on every rank: their statistics are rank 0's, not counted twice."""
    gen = torch.Generator().manual_seed(2)
    batches = [[torch.randn(4, 1, 28, 28, generator=gen) for _ in range(2)] for _ in range(2)]
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        torch.manual_seed(0)
        model = paper_cnn()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay equal on both ranks
        with actprobe.Probe(model, tmp_path / "run", grads=True, params=True, optimizer=opt, hist_every=1) as probe:
            for x in batches[rank]:
                model(x).logsumexp(1).mean().backward()
                opt.step()
                opt.zero_grad()
                probe.step()
    run = actprobe.read(tmp_path / "run")
    ranks = [actprobe.read(tmp_path / "run", rank=r) for r in range(2)]
    values = run.param_stats["param_stats"]
    np.testing.assert_array_equal(values["count"][:], ranks[0].param_stats["param_stats"]["count"][:])
    np.testing.assert_array_equal(values["std"][:], ranks[0].param_stats["param_stats"]["std"][:])
    # plain (not sharded) parameters are replicas, as under DDP: their gradients are rank 0's too, even
    # here, where no DDP averaged them and the ranks' differ
    assert not ranks[0].param_sharded.any()
    for name in ("count", "std"):
        np.testing.assert_array_equal(run.param_stats["param_grad_stats"][name][:],
                                      ranks[0].param_stats["param_grad_stats"][name][:])
    # output gradients: merged like the outputs; histograms: summed
    np.testing.assert_array_equal(run.grad_stats["count"][:], ranks[0].grad_stats["count"][:] + ranks[1].grad_stats["count"][:])
    np.testing.assert_array_equal(run.hist.counts("counts", 1), ranks[0].hist.counts("counts", 1) + ranks[1].hist.counts("counts", 1))
    assert run.hist.counts("grad_counts", [0, 1]).shape[0] == 2


def test_a_site_that_one_rank_never_called_in_a_step(tmp_path, monkeypatch):
    """A branch taken on one rank only: the merged row holds that rank's values, the other adds nothing."""

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 5)

        def forward(self, x: torch.Tensor, take: bool) -> torch.Tensor:
            h = self.a(x)
            return self.b(h) if take else h

    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        model = Branchy()
        outs: dict = {}
        now = [0]
        for name in ("a", "b"):
            getattr(model, name).register_forward_hook(
                lambda m, i, o, name=name: outs.__setitem__((now[0], name), o.detach().clone()))
        with actprobe.Probe(model, tmp_path / "run") as probe:
            for step in range(2):
                now[0] = step
                x = torch.randn(4, 6, generator=torch.Generator().manual_seed(10 * rank + step))
                model(x, step == 0 or rank == 0).sum().backward()  # step 1: only rank 0 calls b
                probe.step()
        assert (1, "b") in outs or rank == 1
        seen.append(outs)
    run = actprobe.read(tmp_path / "run")
    _check_against_reference(run, seen)


def test_bad_ranks_and_folders_are_refused_in_one_line(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(3)
    _record(tmp_path / "run", monkeypatch, 2, [[torch.randn(2, 1, 28, 28, generator=gen)]] * 2)
    with pytest.raises(FormatError, match="has no rank 5; its ranks are 0, 1"):
        actprobe.read(tmp_path / "run", rank=5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="is a folder, not a run file"):
        actprobe.read(tmp_path / "empty")
    single = tmp_path / "single.h5"
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    one_recorded_step(single)
    with pytest.raises(FormatError, match="single-process run file"):
        actprobe.read(single, rank=0)
    with pytest.raises(OptionError, match="distributed=True needs"):
        actprobe.Probe(nn.Sequential(nn.Linear(3, 2)), tmp_path / "x", distributed=True)
    # a rank file of another model in the same segment
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    other = nn.Sequential(nn.Linear(3, 2))
    with actprobe.Probe(other, tmp_path / "run", overwrite=True) as probe:
        other(torch.randn(2, 3))
        probe.step()
    with pytest.raises(FormatError, match="records other sites than"):
        actprobe.read(tmp_path / "run")


def test_dtensor_outputs_are_left_out_with_a_clear_warning(tmp_path):
    """Tensor parallelism: a module whose output is a DTensor (a shard on each rank) is not recorded, and
    the probe says so once; its children's plain outputs are recorded as usual."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))

        class Sharded(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.a = nn.Linear(4, 4)

            def forward(self, x: torch.Tensor) -> DTensor:
                return DTensor.from_local(self.a(x), mesh, [Shard(0)])

        model = nn.Sequential(Sharded(), nn.Identity())
        with pytest.warns(actprobe.ActprobeWarning, match=r"not plain tensors are not recorded.*: 0$"):
            with actprobe.Probe(model, tmp_path / "tp.h5", select=["0", "0.a"]) as probe:
                model[0](torch.randn(3, 4)).to_local().sum().backward()
                probe.step()
        assert actprobe.read(tmp_path / "tp.h5").sites == ["0.a"]
    finally:
        dist.destroy_process_group()


def test_many_units_flush_more_often_with_bounded_memory(tmp_path, monkeypatch):
    """Partials of a wide model take 24 bytes a unit per row: a stage holds what fits in PARTIALS_BYTES
    and flushes more often; every row still reaches the file and merges exactly."""
    from actprobe.engine import staging

    monkeypatch.setattr(staging, "PARTIALS_BYTES", 3 * staging.partial_bytes(11, 378))  # 3 rows a stage
    gen = torch.Generator().manual_seed(4)
    batches = [[torch.randn(3, 1, 28, 28, generator=gen) for _ in range(8)] for _ in range(2)]
    outputs = _record(tmp_path / "run", monkeypatch, 2, batches, flush_every=100)
    run = actprobe.read(tmp_path / "run")
    assert run.rows == 8 and run.ranks[0].unit_columns[:, 1].sum() == 378  # the paper CNN's units
    with h5py.File(run.ranks[0].path) as f:  # committed 3 rows at a time: the stage held 3
        assert f["step"].chunks is not None and len(f["step"]) == 8
    _check_against_reference(run, outputs)


def test_small_merge_blocks_read_the_same_values(tmp_path, monkeypatch):
    """A wide model's merged blocks hold few rows (BLOCK_BYTES): every kind of index reads the same values."""
    from actprobe.runfile import distributed

    gen = torch.Generator().manual_seed(6)
    _record(tmp_path / "run", monkeypatch, 2, [[torch.randn(3, 1, 28, 28, generator=gen) for _ in range(7)]] * 2)
    want = {name: actprobe.read(tmp_path / "run").stats[name][:] for name in ("std", "dead")}
    monkeypatch.setattr(distributed, "BLOCK_BYTES", 1)  # one row a block
    run = actprobe.read(tmp_path / "run")
    for name, values in want.items():
        np.testing.assert_array_equal(run.stats[name][:], values)
        np.testing.assert_array_equal(run.stats[name][[6, 0, 3]], values[[6, 0, 3]])
        np.testing.assert_array_equal(run.stats[name][-1], values[-1])
        assert sum(len(block) for _, block in run.stats[name].blocks()) == 7


def test_a_rank_whose_values_are_all_zero_is_an_outlier():
    from actprobe.analysis.rules import _off_ranks

    assert _off_ranks(np.array([1.0, 1.1, 0.0]), 10.0) == {2: 0.0}
    assert _off_ranks(np.array([1.0, 1.1, 0.9]), 10.0) == {}
    assert _off_ranks(np.array([1.0, 100.0]), 10.0) == {0: 0.01, 1: 100.0}  # two ranks: both named


class Experts(nn.Module):
    """A router's pick of experts: each rank sends its tokens to its own two of three."""

    def __init__(self, picks: tuple[int, ...]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(6, 6) for _ in range(3))
        self.picks = picks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(self.experts[k](x) for k in self.picks)


def test_ranks_that_recorded_different_experts_merge_by_site(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = []
    for rank, picks in enumerate(((0, 2), (1, 2))):
        monkeypatch.setenv("RANK", str(rank))
        torch.manual_seed(0)
        model = Experts(picks)
        outs: dict = {}
        now = [0]
        for k, expert in enumerate(model.experts):
            expert.register_forward_hook(lambda m, i, o, k=k: outs.__setitem__((now[0], f"experts.{k}"), o.detach().clone()))
        with actprobe.Probe(model, tmp_path / "moe") as probe:
            for step in range(3):
                now[0] = step
                model(torch.randn(5 + rank, 6, generator=torch.Generator().manual_seed(10 * rank + step))).sum().backward()
                probe.step()
        seen.append(outs)
    run = actprobe.read(tmp_path / "moe")
    assert sorted(run.sites) == ["experts.0", "experts.1", "experts.2"]
    assert any("different sites" in note for note in run.notes)
    _check_against_reference(run, seen)


def test_a_site_whose_units_differ_between_ranks_has_no_dead_fraction(tmp_path, monkeypatch):
    """An (N, T) output with T padded per rank: count, mean, std … merge; the units (T of them) do not."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    outputs = []
    for rank, length in enumerate((7, 9)):
        monkeypatch.setenv("RANK", str(rank))
        model = nn.Sequential(nn.Linear(4, 1), nn.Flatten(1))
        with actprobe.Probe(model, tmp_path / "pad") as probe:
            x = torch.randn(3, length, 4, generator=torch.Generator().manual_seed(rank))
            out = model(x)
            out.sum().backward()
            probe.step()
        outputs.append(out.detach())
    run = actprobe.read(tmp_path / "pad")
    column = run.sites.index("1")
    assert np.isnan(run.stats["dead"][0, column]) and any("units differ" in note for note in run.notes)
    values = torch.cat([o.reshape(-1) for o in outputs]).double().numpy()
    assert run.stats["count"][0, column] == values.size
    np.testing.assert_allclose(run.stats["std"][0, column], values.std(), rtol=1e-5)
