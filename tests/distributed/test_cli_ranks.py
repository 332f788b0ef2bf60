"""The commands on a distributed run: --rank views, the header that says what was merged, one-line errors."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from actprobe.cli import app
from conftest import assert_one_line_error, one_recorded_step, paper_cnn

import actprobe


def _two_ranks(folder, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        torch.manual_seed(0)
        model = paper_cnn()
        with actprobe.Probe(model, folder) as probe:
            for step in range(3):
                x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(10 * rank + step))
                loss = model(x).logsumexp(1).mean()
                loss.backward()
                probe.step(loss=loss)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_show_info_diagnose_plot_on_the_merged_run_and_on_one_rank(tmp_path, monkeypatch):
    folder = tmp_path / "ddp.h5"
    _two_ranks(folder, monkeypatch)
    merged = invoke("show", folder)
    assert merged.exit_code == 0, merged.output
    assert "distributed run: the global batch of 2 ranks (segment 0)" in merged.output
    rank = invoke("show", folder, "--rank", "1")
    assert rank.exit_code == 0 and "rank 1 of a distributed run of 2 processes" in rank.output
    data = json.loads(invoke("show", folder, "--json").output)
    assert data["ranks"] == 2 and abs(data["sites"][0]["first"]["std"] - float(actprobe.read(folder).stats["std"][0, 0])) < 1e-6
    assert json.loads(invoke("show", folder, "--json", "--rank", "0").output)["ranks"] == 0
    info = invoke("info", folder)
    assert "distributed run of 2 ranks: rank 0 3 rows, rank 1 3 rows" in info.output
    assert invoke("diagnose", folder, "--rank", "0", "--fail-on", "never").exit_code == 0
    plotted = invoke("plot", folder, "--rank", "1", "--out", tmp_path / "figs")
    assert plotted.exit_code == 0 and "ddp-rank1-mean-std.png" in plotted.output


def test_bad_ranks_and_paths_give_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "ddp"
    _two_ranks(folder, monkeypatch)
    for command in ("show", "info", "diagnose", "plot"):
        assert_one_line_error(invoke(command, folder, "--rank", "7"), "has no rank 7; its ranks are 0, 1")
    one_recorded_step(tmp_path / "single.h5")
    assert_one_line_error(invoke("show", tmp_path / "single.h5", "--rank", "0"), "single-process run file")
    (tmp_path / "plain").mkdir()
    assert_one_line_error(invoke("show", tmp_path / "plain"), "is a folder, not a run file")
    (folder / "segment-0" / "rank-1.h5").write_bytes(b"not hdf5")  # a damaged rank file
    assert_one_line_error(invoke("show", folder), "rank-1.h5 is not an HDF5 file")
    assert_one_line_error(invoke("run", tmp_path / "m.py", "--nproc", "0"), "--nproc")


MODEL = ("import torch\nfrom actprobe.models import paper_cnn\ndef model():\n    return paper_cnn()\n"
         "def data():\n    return [(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))) for _ in range(2)]\n")


def test_nproc_refuses_before_starting_any_process(tmp_path):
    (tmp_path / "bad.py").write_text("def model(:\n")
    assert_one_line_error(invoke("run", tmp_path / "bad.py", "--nproc", "2", "--out", tmp_path / "o"), "syntax error")
    (tmp_path / "m.py").write_text(MODEL)
    assert_one_line_error(invoke("run", tmp_path / "m.py", "--nproc", "2", "--init-check", "--out", tmp_path / "o"),
                          "an init check runs in one")
    assert not (tmp_path / "o").exists()


def test_rank_variables_alone_make_no_job(tmp_path):
    """A cluster's container sets RANK and WORLD_SIZE for every process: `actprobe run` stays one process."""
    (tmp_path / "m.py").write_text(MODEL)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "m.py"), "--out", str(tmp_path / "one.h5"), "--steps", "2"],
                                env={"RANK": "0", "WORLD_SIZE": "2", "COLUMNS": "200", "ACTPROBE_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "one.h5").is_file() and actprobe.read(tmp_path / "one.h5").rows == 2
