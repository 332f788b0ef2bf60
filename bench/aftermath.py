"""What a long probed run leaves behind in the process: the speed of a model that no probe watches, before and after.

A probe must not slow down the rest of the process once it is closed. One way it could: changing a class
(``nn.Module._call_impl``, engine/dispatch.py) changes the class and every subclass, and CPython 3.13 gives a class
at most 1,000 versions (``MAX_VERSIONS_PER_CLASS``) before it stops specialising attribute lookups and calls on its
instances for the rest of the process. This script times forwards of a model of 100 small layers (no probe, no
gradients), then trains another model under a probe recording every ``--every``-th of ``--steps`` steps, closes
it, and times the first model again. Each time is taken against a control timed alternately with it: the same
layers' arithmetic through plain Python classes that are not ``nn.Module``s (a change of ``nn.Module`` leaves them
alone), so that the machine's drift between before and after cancels in the ratio. Prints both ratios, their
change, and how many times ``nn.Module``'s ``_call_impl`` was set during the run (read between steps).

    python bench/aftermath.py [--steps 6000] [--every 10]

Run it with each Python at hand: the limit exists from CPython 3.13.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import actprobe


def layers() -> nn.Sequential:
    return nn.Sequential(*[m for _ in range(50) for m in (nn.Linear(64, 64), nn.ReLU())])


class Plain:
    """The control: a layer as a plain Python object, called as a module is (``__call__`` -> ``forward``)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


class PlainLinear(Plain):
    def __init__(self, linear: nn.Linear) -> None:
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias)


class PlainReLU(Plain):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class PlainSequential(Plain):
    def __init__(self, model: nn.Sequential) -> None:
        self.layers = [PlainLinear(m) if isinstance(m, nn.Linear) else PlainReLU() for m in model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def forward_us(model, x: torch.Tensor, rounds: int = 400) -> float:
    times = []
    with torch.no_grad():
        for _ in range(rounds):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def against_control(model: nn.Module, control: Plain, x: torch.Tensor, blocks: int = 7) -> tuple[float, float, float]:
    """Medians of the model's and the control's forward (µs), timed alternately, and of their per-block ratio."""
    ours, theirs = [], []
    for _ in range(blocks):
        ours.append(forward_us(model, x))
        theirs.append(forward_us(control, x))
    return (statistics.median(ours), statistics.median(theirs),
            statistics.median(a / b for a, b in zip(ours, theirs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    watched, x = layers(), torch.randn(32, 64)
    control = PlainSequential(watched)
    assert torch.equal(watched(x), control(x))
    for _ in range(3):
        forward_us(watched, x, 100)
        forward_us(control, x, 100)
    before = against_control(watched, control, x)
    trained = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(trained.parameters(), lr=0.01)
    batch = torch.randn(8, 16)
    changes, last = 0, nn.Module.__dict__["_call_impl"]
    started = time.perf_counter()
    with actprobe.Probe(trained, Path(tempfile.mkdtemp()) / "aftermath.h5", every=args.every) as probe:
        for _ in range(args.steps):
            trained(batch).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            probe.step()
            now = nn.Module.__dict__["_call_impl"]  # (read between steps: a change and back inside one goes unseen)
            changes += now is not last
            last = now
    run_s = time.perf_counter() - started
    changes += nn.Module.__dict__["_call_impl"] is not last
    after = against_control(watched, control, x)
    print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, actprobe {actprobe.__version__}: "
          f"{args.steps} steps recording every {args.every}th ({run_s:.1f} s), nn.Module._call_impl changed "
          f"{changes} times between steps")
    for when, (model_us, control_us, ratio) in (("before the run", before), ("after the run ", after)):
        print(f"{when}: forward of 100 small layers {model_us:7.1f} µs, the plain-class control {control_us:7.1f} µs, "
              f"ratio {ratio:.3f}")
    print(f"modules against the control after the run: {100 * (after[2] / before[2] - 1):+.1f}%")


if __name__ == "__main__":
    main()
