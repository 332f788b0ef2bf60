"""Overhead of recording a DDP job: distributed mode (one rank file each, merged when read) against
single-process recording (each rank its own independent file) and against no probe, side by side.

Starts ``--nproc`` processes with torchrun (gloo on the CPU, NCCL with one GPU each); every rank trains
three copies of the paper's CNN with DistributedDataParallel, interleaved round by round (bench/common.py):
no probe, a probe with ``distributed=False`` writing a file of its own, and a probe in distributed mode
(the default under torchrun: the rank file with the rows' mergeable partials). Rank 0 prints the median
step time of each mode and its overhead against the baseline of the same round, with quartiles, and the
paired ratio of distributed to single-process recording; then reads the run folder back and times that.

    python bench/distributed.py [--nproc 2] [--rounds 30] [--steps 10] [--batch 128] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def launch(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               __file__, "--worker", "--rounds", str(args.rounds), "--steps", str(args.steps), "--batch",
               str(args.batch), "--device", args.device, "--warmup", str(args.warmup)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, env=env, check=False).returncode


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import actprobe
    from actprobe.models import paper_cnn
    from common import interleaved, median_ms, paired_overhead

    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    folder = Path(os.environ["ACTPROBE_BENCH_DIR"])
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)

    def trainer(probe_options: dict | None):
        torch.manual_seed(0)
        model = paper_cnn().to(device)
        ddp = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
        opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)
        probe = None if probe_options is None else actprobe.Probe(model, **probe_options)

        def step() -> None:
            loss = torch.nn.functional.cross_entropy(ddp(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if probe is not None:
                probe.step(loss=loss)
        return step, probe

    modes, probes = {}, []
    for name, options in (("baseline", None),
                          ("single-process recording", {"path": folder / f"single-rank{rank}.h5", "distributed": False}),
                          ("distributed recording", {"path": folder / "distributed"})):
        modes[name], probe = trainer(options)
        probes.append(probe)
    sync = (lambda: (torch.cuda.synchronize(), dist.barrier())) if cuda else dist.barrier
    samples = interleaved(modes, rounds=args.rounds, steps=args.steps, warmup=args.warmup, sync=sync)
    for probe in probes:
        if probe is not None:
            probe.close()
    dist.barrier()
    if rank == 0:
        name = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine())
        print(f"paper CNN, DDP over {world} processes ({'NCCL, ' + name if cuda else 'gloo, CPU: ' + name}, "
              f"{os.cpu_count()} cores, OMP threads {torch.get_num_threads()}), torch {torch.__version__}, "
              f"batch {args.batch} per rank, {args.rounds} rounds × {args.steps} steps per mode")
        print(f"{'mode':28s} {'ms/step':>8s}  overhead   (quartiles)")
        for mode, values in samples.items():
            median, q1, q3 = paired_overhead(values, samples["baseline"])
            print(f"{mode:28s} {median_ms(values):8.2f}  {100 * median:+6.1f}%   ({100 * q1:+.1f}% .. {100 * q3:+.1f}%)")
        median, q1, q3 = paired_overhead(samples["distributed recording"], samples["single-process recording"])
        print(f"{'distributed vs single':28s} {'':8s}  {100 * median:+6.1f}%   ({100 * q1:+.1f}% .. {100 * q3:+.1f}%)"
              "  (paired per round)")
        started = time.perf_counter()
        run = actprobe.read(folder / "distributed")
        stds = run.stats["std"][:]
        read_seconds = time.perf_counter() - started
        print(f"read back: {run.rows} rows × {len(run.sites)} sites of {world} ranks, merged in {read_seconds:.3f} s "
              f"({'finite' if (stds == stds).all() else 'NaN present'})")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="actprobe-ddp-bench-") as folder:
        os.environ["ACTPROBE_BENCH_DIR"] = folder
        sys.exit(launch(args))


if __name__ == "__main__":
    main()
