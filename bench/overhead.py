"""Training-step overhead of actprobe on the paper's reference CNN (batch 256, 1×28×28 inputs).

Modes, interleaved in one run: no probe; a second copy of that baseline (it shows the noise of the
method); actprobe recording every step (default selection, the file written by the background
thread); with --torch-kernel, the same with the torch kernel that runs where the C kernel was not
built; actprobe recording every 10th step; a fastai-style hook calling ``.item()`` on each
statistic of each layer every step; one plain ``sum()`` per hooked activation (a floor for any hook
that reads every value). Inputs are standardised random tensors: step time does not depend on the
values. The overhead of a mode is the median over rounds of its step time divided by the
baseline's in the same round, minus one; the quartiles of that ratio show the spread.

    python bench/overhead.py [--rounds 60] [--steps 5] [--device cpu|cuda] [--torch-kernel]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import actprobe  # noqa: E402
from actprobe.models import paper_cnn  # noqa: E402
from common import interleaved, median_ms, paired_overhead  # noqa: E402


def make_trainer(device: torch.device, batch: int) -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model = paper_cnn().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return model, step


def leaves(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if next(m.children(), None) is None]


def fastai_style(output: torch.Tensor, store: list) -> None:
    o = output.detach().float()
    store.append((o.mean().item(), o.std().item(), o.min().item(), o.max().item(),
                  (o.abs() <= 0.05).float().mean().item()))


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-kernel", action="store_true",
                        help="also time the torch kernel on the CPU (what runs where the C kernel was not built)")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tmp = Path(tempfile.mkdtemp(prefix="actprobe-bench-"))
    modes = {}

    _, base = make_trainer(device, args.batch)
    modes["baseline"] = lambda: (base(), sync())
    _, control = make_trainer(device, args.batch)
    modes["baseline, second copy"] = lambda: (control(), sync())  # the noise floor of the method

    model, probed = make_trainer(device, args.batch)
    probe = actprobe.Probe(model, tmp / "bench.h5")
    modes["actprobe every step"] = lambda: (probe.step(loss=probed()), sync())

    if device.type == "cpu" and args.torch_kernel:
        model_t, probed_t = make_trainer(device, args.batch)
        probe_t = actprobe.Probe(model_t, tmp / "bench-torch.h5")
        probe_t._recorder.kernel.use_c = False  # the torch kernel, as used where no C compiler was found
        modes["actprobe, torch kernel"] = lambda: (probe_t.step(loss=probed_t()), sync())

    model_10, probed_10 = make_trainer(device, args.batch)
    probe_10 = actprobe.Probe(model_10, tmp / "bench-every10.h5", every=10)
    modes["actprobe every 10th step"] = lambda: (probe_10.step(loss=probed_10()), sync())

    model_f, fastai_step = make_trainer(device, args.batch)
    store: list = []
    for m in leaves(model_f):
        m.register_forward_hook(lambda mod, a, out: fastai_style(out, store))
    modes["fastai-style .item()"] = lambda: (fastai_step(), store.clear(), sync())

    model_s, sum_step = make_trainer(device, args.batch)
    sums: list = []
    for m in leaves(model_s):
        m.register_forward_hook(lambda mod, a, out: sums.append(out.detach().sum()))
    modes["one sum per activation"] = lambda: (sum_step(), sums.clear(), sync())

    samples = interleaved(modes, rounds=args.rounds, steps=args.steps, warmup=10)
    for p in (probe, probe_10) + ((probe_t,) if "actprobe, torch kernel" in modes else ()):
        p.close()
    print(f"paper CNN, batch {args.batch}, {machine(device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps per mode")
    print(f"{'mode':28s} {'ms/step':>9s} {'overhead':>9s} {'(quartiles)':>16s}")
    for mode, values in samples.items():
        median, q1, q3 = paired_overhead(values, samples["baseline"])
        print(f"{mode:28s} {median_ms(values):9.2f} {100 * median:+8.1f}%  ({100 * q1:+5.1f}% .. {100 * q3:+5.1f}%)")
    run = actprobe.read(tmp / "bench.h5")
    print(f"actprobe wrote {run.rows} rows x {len(run.sites)} sites to {tmp / 'bench.h5'}")


if __name__ == "__main__":
    main()
