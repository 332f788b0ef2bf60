"""Histograms (``Probe(hist_every=k)``): counts of every site's output and gradient equal
``numpy.histogram`` with the file's edges, every k-th recorded step; the file's ``hist/`` group and
the plot's images."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.runfile.format import HIST_EDGES
from actprobe.stats import histogram
from actprobe.stats.histogram import CHUNK, Histograms
from conftest import one_recorded_step


def numpy_histogram(tensors: list[torch.Tensor]) -> np.ndarray:
    values = np.concatenate([t.detach().double().numpy().ravel() for t in tensors])
    return np.histogram(values, np.array(HIST_EDGES))[0].astype(np.float64)


def test_the_bins_see_a_collapsed_and_an_exploding_layer():
    gen = torch.Generator().manual_seed(0)
    for scale in (1e-3, 1.0, 1e3):
        counts = numpy_histogram([torch.randn(10_000, generator=gen) * scale])
        assert (counts > 0).sum() >= 10, f"std {scale}: only {(counts > 0).sum()} bins used"
        assert counts[0] == counts[-1] == 0, "nothing in the under/overflow bins"


@pytest.mark.parametrize("counter", ["C", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_counts_equal_numpy_histogram_with_the_same_edges(dtype, counter, monkeypatch):
    if counter == "torch":  # what CUDA tensors use (bucketize + index_add_), and the CPU without the extension
        monkeypatch.setattr(histogram, "_chist", None)
    elif histogram._chist is None:
        pytest.skip("the C histogram was not built")
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(CHUNK + 1000, generator=gen) * 10.0 ** torch.randint(-7, 7, (CHUNK + 1000,), generator=gen)).to(dtype)
    edges = torch.tensor(HIST_EDGES[1:-1], dtype=torch.float64)
    x[:8] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-6, -1e-6, 1e6]).to(dtype)
    x[8:20] = edges[::8][:12].to(dtype)  # values at the edges (as the dtype rounds them)
    hist = Histograms(torch.device("cpu"))
    hist.add(1, x)
    got = hist.take(2)
    assert got[0].sum() == 0
    np.testing.assert_array_equal(got[1].numpy(), numpy_histogram([x]))
    assert got[1].sum() == x.numel() - 1, "every value but the NaN is counted"


def test_a_probe_writes_histograms_of_outputs_and_gradients_every_kth_recorded_step(tmp_path):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    kept: dict[int, dict[str, list[torch.Tensor]]] = {}
    outputs: list[torch.Tensor] = []
    def keep(module, args, out) -> None:
        out.retain_grad()
        outputs.append(out)

    for module in model:
        module.register_forward_hook(keep)
    with actprobe.Probe(model, tmp_path / "run.h5", grads=True, every=2, hist_every=2, flush_every=3) as probe:
        for step in range(9):
            outputs.clear()
            for _ in range(2):  # two backward passes per step: merged
                model(torch.randn(5, 6)).pow(2).sum().backward()
            kept[step] = {"out": list(outputs), "grad": [o.grad for o in outputs]}
            probe.step()
    run = actprobe.read(tmp_path / "run.h5")
    assert list(run.step) == [0, 2, 4, 6, 8] and list(run.hist.step) == [0, 4, 8]
    np.testing.assert_array_equal(run.hist.edges, np.array(HIST_EDGES))
    for h, step in enumerate(run.hist.step):
        for column in range(3):
            calls = kept[int(step)]
            np.testing.assert_array_equal(run.hist.counts("counts", h)[column],
                                          numpy_histogram(calls["out"][column::3]))
            np.testing.assert_array_equal(run.hist.counts("grad_counts", h)[column],
                                          numpy_histogram(calls["grad"][column::3]))
    assert run.attrs["hist_every"] == 2


def test_plot_draws_the_histogram_images_and_the_gradient_and_update_figures(tmp_path):
    from typer.testing import CliRunner

    from actprobe.cli import app

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with actprobe.Probe(model, tmp_path / "run.h5", grads=True, params=True, optimizer=optimizer,
                        hist_every=1) as probe:
        for _ in range(4):
            optimizer.zero_grad()
            model(torch.randn(5, 6)).pow(2).sum().backward()
            optimizer.step()
            probe.step()
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "run.h5"), "--out", str(tmp_path / "fig")])
    assert result.exit_code == 0, result.output
    for name in ("run-grad-std.png", "run-update-ratio.png", "run-counts.png", "run-grad-counts.png"):
        assert (tmp_path / "fig" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_hist_every_must_be_a_whole_number(tmp_path):
    with pytest.raises(actprobe.OptionError, match="hist_every"):
        actprobe.Probe(nn.Linear(2, 2), tmp_path / "run.h5", hist_every=-1)


def tiny_run(path) -> None:
    """One recorded step of a Linear, with a histogram row: a file to damage or replace."""
    one_recorded_step(path, hist_every=1, overwrite=True)


def test_a_file_whose_histograms_are_damaged_is_refused_in_one_line(tmp_path):
    tiny_run(tmp_path / "run.h5")
    with h5py.File(tmp_path / "run.h5", "r+") as f:
        del f["hist/edges"]
        f["hist/edges"] = np.array([1.0, 0.0])
    with pytest.raises(actprobe.FormatError, match="hist/edges"):
        actprobe.read(tmp_path / "run.h5")


def test_histograms_of_a_replaced_file_are_refused(tmp_path):
    tiny_run(tmp_path / "run.h5")
    run = actprobe.read(tmp_path / "run.h5")
    run.hist.counts("counts", 0)
    tiny_run(tmp_path / "run.h5")  # another run at the same path
    with pytest.raises(actprobe.FormatError, match="replaced by another run"):
        run.hist.counts("counts", 0)


def test_a_file_declaring_huge_edges_is_refused_before_reading_them(tmp_path):
    tiny_run(tmp_path / "run.h5")
    with h5py.File(tmp_path / "run.h5", "r+") as f:
        del f["hist/edges"]
        f.create_dataset("hist/edges", shape=(50_000_000,), dtype=np.float64)  # 400 MB declared, none stored
    with pytest.raises(actprobe.FormatError, match="declares more data"):
        actprobe.read(tmp_path / "run.h5")
