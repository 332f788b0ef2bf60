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
    """Whether this process was started by torchrun (or another launcher that sets its variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``actprobe run ARGV`` in ``nproc`` processes under torchrun; its exit code."""
    if not 1 <= nproc <= MAX_PROCESSES:
        raise OptionError(f"--nproc must be a whole number from 1 to {MAX_PROCESSES}, got {nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "actprobe", "run", *argv]
    try:
        return subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        return 130


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

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
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
