"""Real multi-process jobs: torchrun starts N processes that train the paper CNN with DDP (gloo, CPU)
under an actprobe Probe (``ddp_worker.py``). The merged run must be the float64 reference of the
global batches; a killed rank must not hang the others; a restart must not destroy the first attempt."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import actprobe
from actprobe.analysis.diagnose import diagnose
from actprobe.analysis.rules import evaluate
from conftest import mismatches, paper_cnn, reference_statistics

pytestmark = pytest.mark.slow  # each job starts torch in every process
WORKER = Path(__file__).with_name("ddp_worker.py")
UNIT_DIM = {1: 1, -1: -1, 0: None}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def torchrun(out: Path, nproc: int, *args: str, timeout: float = 180, restarts: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*TORCHRUN, f"--nproc-per-node={nproc}", f"--max-restarts={restarts}", str(WORKER),
                           str(out), *args], capture_output=True, text=True, timeout=timeout, env=env)


def check_against_reference(run, folder: Path, world: int, kinds=("out", "grad")) -> int:
    refs = [torch.load(folder / f"reference-rank-{r}.pt") for r in range(world)]
    checked = 0
    for kind in kinds:
        stats = run.stats if kind == "out" else run.grad_stats
        for row, step in enumerate(run.step):
            for column, site in enumerate(run.sites):
                key = (int(step), site, kind)
                parts = [ref[key] for ref in refs if key in ref]
                want = reference_statistics(torch.cat(parts), UNIT_DIM[int(run.site_unit_dims[column])])
                got = {name: float(stats[name][row, column]) for name in actprobe.STATISTICS}
                wrong = mismatches(got, want, 1e-5)
                assert not wrong, (kind, int(step), site, wrong)
                checked += 1
    return checked


@pytest.mark.parametrize("world,uneven", [(2, False), (3, False), (2, True), (3, True)])
def test_every_statistic_of_a_ddp_run_is_the_global_batchs(tmp_path, world, uneven):
    out = tmp_path / "ddp.h5"
    job = torchrun(out, world, "--grads", "--steps", "4", *(["--uneven"] if uneven else []))
    assert job.returncode == 0, job.stderr[-3000:]
    run = actprobe.read(out)
    assert run.distributed and run.rows == 4 and run.attrs["ranks"] == world and run.closed
    assert check_against_reference(run, out, world) == 2 * 4 * len(run.sites)
    assert not [o for o in evaluate(run) if o.rule == "rank-outlier"]  # ranks of one data set: quiet
    if uneven:  # the last step's batches had 8, 7 (and 6) images: counted as such
        first = actprobe.read(out, rank=0).stats["count"][-1, 0]
        assert run.stats["count"][-1, 0] == first * sum(8 - r for r in range(world)) / 8


def test_a_rank_whose_inputs_are_scaled_is_found(tmp_path):
    out = tmp_path / "scaled"
    job = torchrun(out, 3, "--steps", "3", "--scale-rank", "1")
    assert job.returncode == 0, job.stderr[-3000:]
    run = actprobe.read(out)
    check_against_reference(run, out, 3, kinds=("out",))
    first_conv = run.sites.index("module.0")
    stds = [actprobe.read(out, rank=r).stats["std"][0, first_conv] for r in range(3)]
    assert stds[1] > 50 * max(stds[0], stds[2])  # the rank view shows it
    flagged = [o for o in evaluate(run) if o.rule == "rank-outlier"]
    # where it starts: the first layer, rank 1 alone (not every layer after it)
    assert [(o.column, o.evidence["ranks"]) for o in flagged] == [(first_conv, [1])], [o.detail for o in flagged]
    (finding,) = [f for f in diagnose(run) if f.rule == "rank-outlier"]
    assert finding.evidence["ranks"] == [1] and "rank 1" in finding.advice


def test_fsdp2_shards_merge_into_the_whole_parameters(tmp_path):
    """FSDP2 (fully_shard): each rank holds a shard of every parameter (a DTensor); the merged parameter
    statistics are the whole tensors', the activations and gradients the global batch's."""
    out = tmp_path / "fsdp"
    job = torchrun(out, 2, "--fsdp", "--grads", "--params", "--steps", "3")
    assert job.returncode == 0, job.stderr[-3000:]
    run = actprobe.read(out)
    check_against_reference(run, out, 2)
    torch.manual_seed(0)
    initial = dict(paper_cnn().named_parameters())  # the same init as the workers'; row 0 is before any update
    values = run.param_stats["param_stats"]
    for p, name in enumerate(run.params):
        want = reference_statistics(initial[name].detach(), None)
        got = {stat: float(values[stat][0, p]) for stat in actprobe.STATISTICS}
        assert not mismatches(got, want, 1e-5), (name, mismatches(got, want, 1e-5))
    assert actprobe.read(out, rank=0).param_stats["param_stats"]["count"][0, 0] < values["count"][0, 0]


def test_a_killed_rank_hangs_no_one_and_committed_rows_read_back(tmp_path):
    out = tmp_path / "killed"
    started = time.monotonic()
    job = torchrun(out, 2, "--steps", "40", "--kill-rank", "1", "--kill-step", "5", "--no-reference", timeout=120)
    elapsed = time.monotonic() - started
    assert job.returncode != 0 and elapsed < 120
    killed = actprobe.read(out, rank=1)
    assert killed.rows >= 6 and not killed.closed  # flushed before its SIGKILL; never closed
    survivor = actprobe.read(out, rank=0)
    assert survivor.rows >= 6
    run = actprobe.read(out)
    assert run.rows == min(killed.rows, survivor.rows) and list(run.step[:6]) == list(range(6))
    assert np.isfinite(run.stats["std"][:]).all()


def by_hand(out: Path, world: int, restart: int | list[int], *args: str, job: str = "job-1") -> list[int]:
    """Start the ranks as torchelastic starts a restarted job's workers (its environment variables,
    TORCHELASTIC_RESTART_COUNT — one per rank when a list: agents on several nodes count apart — and
    TORCHELASTIC_RUN_ID); returns their exit codes."""
    restarts = restart if isinstance(restart, list) else [restart] * world
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "TORCHELASTIC_RESTART_COUNT": str(restarts[rank]),
               "TORCHELASTIC_RUN_ID": job}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), *args], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return [p.wait(timeout=120) for p in procs]


def test_an_elastic_restart_starts_a_new_segment_and_keeps_the_first(tmp_path):
    """torchrun --max-restarts with gloo fails to reconnect on this machine's torch (a ten-line script
    without actprobe too), so the attempts are started by hand, with the environment torchelastic gives."""
    out = tmp_path / "elastic"
    assert by_hand(out, 2, 0, "--steps", "4", "--fail-once", "--no-reference") != [0, 0]
    assert by_hand(out, 2, 1, "--steps", "4", "--fail-once", "--no-reference") == [0, 0]
    first = actprobe.read(out / "segment-0")
    assert first.rows >= 2 and first.attrs["segment"] == 0  # committed before the failure, kept
    run = actprobe.read(out)
    assert run.attrs["segment"] == 1 and run.rows == 4 and run.closed
    assert any("segment 1 of 2" in note for note in run.notes)


def test_agents_that_count_restarts_apart_still_meet_in_one_new_segment(tmp_path):
    """Two nodes: the agent whose worker failed counts a restart, the other (a membership change) does not.
    Its rank finds its own file of the same job in segment 0 and moves on to segment 1, beside the other."""
    out = tmp_path / "nodes"
    assert by_hand(out, 2, 0, "--steps", "4", "--fail-once", "--no-reference") != [0, 0]
    assert by_hand(out, 2, [0, 1], "--steps", "4", "--no-reference") == [0, 0]
    run = actprobe.read(out)
    assert run.attrs["segment"] == 1 and run.attrs["ranks"] == 2 and run.rows == 4
    assert actprobe.read(out / "segment-0").rows >= 2
    # another job on the same folder is refused, as an existing file is (nothing of the first is touched)
    assert by_hand(out, 2, 0, "--steps", "2", "--no-reference", job="job-2") != [0, 0]
    assert actprobe.read(out).rows == 4


def test_overwrite_replaces_a_run_folder_of_another_size(tmp_path):
    out = tmp_path / "again"
    assert torchrun(out, 3, "--steps", "3", "--no-reference").returncode == 0
    assert by_hand(out, 2, 1, "--steps", "2", "--no-reference", job="old") == [0, 0]  # a restart: segment 1
    job = torchrun(out, 2, "--steps", "2", "--no-reference", "--overwrite")
    assert job.returncode == 0, job.stderr[-2000:]
    run = actprobe.read(out)
    assert run.attrs["ranks"] == 2 and run.attrs["segment"] == 0 and run.rows == 2 and not run.notes
    assert sorted(p.name for p in (out / "segment-0").glob("*.h5")) == ["rank-0.h5", "rank-1.h5"]
    assert not (out / "segment-1").exists()


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="no torchrun script")
def test_actprobe_run_nproc_trains_a_model_file_with_ddp(tmp_path):
    model_file = tmp_path / "model.py"
    model_file.write_text(
        "import torch\nfrom actprobe.models import paper_cnn\n"
        "def model():\n    return paper_cnn()\n"
        "def data():\n    g = torch.Generator().manual_seed(0)\n"
        "    return [(torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]\n")
    out = tmp_path / "cli-run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    job = subprocess.run([sys.executable, "-m", "actprobe", "run", str(model_file), "--out", str(out), "--nproc", "2",
                          "--steps", "3"], capture_output=True, text=True, timeout=180, env=env)
    assert job.returncode == 0, job.stderr[-3000:]
    run = actprobe.read(out)
    assert run.distributed and run.attrs["ranks"] == 2 and run.rows == 3
    assert "2 ranks" in job.stdout


def test_actprobe_run_nproc_with_a_rank_that_fails_ends_in_bounded_time(tmp_path):
    """Batch 5 of data() is malformed: rank 1 stops with one error line and does not wait for rank 0, which
    torchrun then ends; both ranks' committed rows stay readable."""
    model_file = tmp_path / "bad.py"
    model_file.write_text(
        "import torch\nfrom actprobe.models import paper_cnn\n"
        "def model():\n    return paper_cnn()\n"
        "def data():\n    g = torch.Generator().manual_seed(0)\n"
        "    for i in range(12):\n"
        "        n = 0 if i == 5 else 8\n"
        "        yield torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)\n")
    out = tmp_path / "bad-run"
    started = time.monotonic()
    job = subprocess.run([sys.executable, "-m", "actprobe", "run", str(model_file), "--out", str(out), "--nproc", "2",
                          "--steps", "6"], capture_output=True, text=True, timeout=150,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert job.returncode != 0 and time.monotonic() - started < 150
    assert "must have the same (non-zero) batch dimension" in job.stderr + job.stdout
    assert actprobe.read(out, rank=1).rows >= 1
