"""``actprobe run --nproc N``: the same run in N processes with DistributedDataParallel.

The command started by the user launches torchrun (``torch.distributed.run --standalone``), which
starts N copies of ``actprobe run`` with its rank environment. Each copy joins the process group
(gloo on the CPU, NCCL on GPUs, one GPU per process), wraps the model in DDP, trains on every N-th
batch of ``data()`` (batch i on rank i mod N; as many batches on every rank) and records its rank
file of the run folder; rank 0 prints the summary of the merged run once every rank has closed its
file. ``torchrun … -m actprobe run FILE.py`` is the same without the first step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import OptionError

MAX_PROCESSES = 1024


def in_job() -> bool:
    """Whether this process is a worker that torchrun started (its RANK, WORLD_SIZE and run id are set):
    RANK and WORLD_SIZE alone, as a cluster's containers set them, do not make ``actprobe run`` a rank."""
    return all(name in os.environ for name in ("WORLD_SIZE", "RANK", "TORCHELASTIC_RUN_ID"))


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``actprobe run ARGV`` in ``nproc`` processes under torchrun; its exit code: 2 with the ranks'
    ``error:`` lines, once each, when they failed on bad input (torchrun's report of the failure is left
    out), else torchrun's."""
    if not 1 <= nproc <= MAX_PROCESSES:
        raise OptionError(f"--nproc must be a whole number from 1 to {MAX_PROCESSES}, got {nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "actprobe", "run", *argv]
    try:
        done = subprocess.run(command, check=False, stderr=subprocess.PIPE, text=True, errors="replace")
    except KeyboardInterrupt:
        return 130
    if done.returncode == 0:
        return 0
    errors = list(dict.fromkeys(line for line in done.stderr.splitlines() if line.startswith("error: ")))
    for line in errors:
        print(line, file=sys.stderr)
    if errors:
        return 2
    last = [line.strip() for line in done.stderr.splitlines() if line.strip() and not line.startswith(("W", "E", " "))]
    print(f"error: the ranks failed (torchrun exit code {done.returncode})" + (f": {last[-1]}" if last else ""),
          file=sys.stderr)
    return done.returncode


@dataclass
class RankJob:
    """This process's part of a ``--nproc`` run: its rank, the process group and its device."""

    rank: int
    world: int
    device: torch.device

    @classmethod
    def join(cls, device: torch.device) -> RankJob:
        """Join the job's process group; one GPU per process (the local rank's) when ``device`` is CUDA."""
        import torch.distributed as dist

        try:
            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        except (RuntimeError, ValueError, OSError) as exc:
            from .._text import one_line

            raise OptionError(f"cannot join the job's process group: {one_line(exc)}") from None
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def shard(self, batches: Callable[[int], Iterable[Any]], length: int | None) -> Callable[[int], Iterator[Any]]:
        """Batch i of each epoch on rank i mod N; with a known ``length``, length // N batches on every rank
        (DDP needs the same number of steps on all of them)."""
        share = None if length is None else length // self.world

        def epoch(index: int) -> Iterator[Any]:
            taken = 0
            for i, batch in enumerate(batches(index)):
                if share is not None and taken >= share:
                    return
                if i % self.world == self.rank:
                    taken += 1
                    yield batch
        return epoch

    def finish(self, wait: bool = True) -> None:
        """Wait (``wait``) until every rank has closed its file, so that rank 0 then reads them all, and
        leave the group."""
        import torch.distributed as dist

        if dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()
