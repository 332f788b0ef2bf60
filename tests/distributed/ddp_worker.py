"""One rank of a real DDP job (gloo, CPU) training the paper CNN under an actprobe Probe; run by torchrun.

Besides the probe, every rank keeps its own copy of each leaf module's output (and its gradient) per
step, captured by plain PyTorch hooks that share nothing with actprobe: the tests merge these copies
over the ranks and compute the float64 reference of the global batch from them.

    torchrun --standalone --nproc-per-node N ddp_worker.py OUT [--steps S] [--batch B] [--uneven]
        [--scale-rank R] [--grads] [--params] [--hist-every K] [--kill-rank R --kill-step S] [--no-reference]
        [--fail-once] [--fsdp]
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import actprobe
from actprobe.models import paper_cnn


def batch_of(step: int, rank: int, world: int, batch: int, uneven: bool, last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s share of step ``step``'s global batch: ranks take consecutive slices; with
    ``uneven``, the last step's slices have batch − rank images (a data set that does not divide)."""
    sizes = [batch - r if uneven and last else batch for r in range(world)]
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(sum(sizes), 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (sum(sizes),), generator=gen)
    start = sum(sizes[:rank])
    return x[start:start + sizes[rank]], y[start:start + sizes[rank]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--uneven", action="store_true")
    parser.add_argument("--scale-rank", type=int, default=-1)
    parser.add_argument("--grads", action="store_true")
    parser.add_argument("--params", action="store_true")
    parser.add_argument("--hist-every", type=int, default=0)
    parser.add_argument("--kill-rank", type=int, default=-1)
    parser.add_argument("--kill-step", type=int, default=-1)
    parser.add_argument("--fail-once", action="store_true", help="rank 0 raises at the last step of the first attempt")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 (fully_shard) instead of DDP")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = paper_cnn()
    if args.fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if any(True for _ in layer.parameters()):
                fully_shard(layer)
        ddp = fully_shard(model)  # the model itself, its parameters now DTensor shards
    else:
        ddp = DistributedDataParallel(model)
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    reference: dict[tuple[int, str, str], torch.Tensor] = {}
    prefix = "" if args.fsdp else "module."  # the probe watches the DDP wrapper: its children are module.*
    step_now = [0]

    def keep(name: str):
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            reference[(step_now[0], prefix + name, "out")] = output.detach().clone()
            if args.grads and output.requires_grad:
                output.register_hook(lambda g: reference.__setitem__((step_now[0], prefix + name, "grad"),
                                                                     g.detach().clone()))
        return hook

    if not args.no_reference:
        for name, module in model.named_modules():
            if not list(module.children()):
                module.register_forward_hook(keep(name))

    probe = actprobe.Probe(ddp, args.out, grads=args.grads, params=args.params, optimizer=opt if args.params else None,
                           hist_every=args.hist_every, flush_every=2, overwrite=args.overwrite)
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    for step in range(args.steps):
        step_now[0] = step
        x, y = batch_of(step, rank, world, args.batch, args.uneven, step == args.steps - 1)
        if rank == args.scale_rank:
            x = x * 100
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        probe.step(loss=loss)
        if rank == args.kill_rank and step == args.kill_step:
            probe.flush(wait=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if args.fail_once and restart == 0 and rank == 0 and step == args.steps - 2:
            probe.flush(wait=True)
            raise SystemExit("failing on purpose: torchelastic restarts the job")
    probe.close()
    if not args.no_reference:
        torch.save(reference, args.out / f"reference-rank-{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
