"""Where actprobe's per-step time goes on the CPU: the C kernel, the rest of the hooks, and step().

Wraps the parts with time.perf_counter over a training run of the paper's CNN (batch 256) and prints
milliseconds per step for each, beside the step time.

    python bench/breakdown.py [--steps 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import actprobe  # noqa: E402
from actprobe import kernels, probe as probe_module, recorder  # noqa: E402
from overhead import make_trainer  # noqa: E402

spent = {"C kernel": 0.0, "hooks (all)": 0.0, "probe.step()": 0.0}


def timed(key: str, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - start
    return wrapper


class TimedC:
    moments = staticmethod(timed("C kernel", kernels._cstats.moments)) if kernels._cstats else None
    masked = staticmethod(kernels._cstats.masked) if kernels._cstats else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    if kernels._cstats is None:
        sys.exit("error: the C kernel is not built")
    kernels._cstats = TimedC
    recorder.Recorder.observe = timed("hooks (all)", recorder.Recorder.observe)
    probe_module.Probe.step = timed("probe.step()", probe_module.Probe.step)
    model, train = make_trainer(torch.device("cpu"), 256)
    with actprobe.Probe(model, Path(tempfile.mkdtemp()) / "breakdown.h5") as probe:
        for _ in range(20):
            probe.step(loss=train())
        for key in spent:
            spent[key] = 0.0
        start = time.perf_counter()
        for _ in range(args.steps):
            probe.step(loss=train())
        total = time.perf_counter() - start
    print(f"{args.steps} steps, {1e3 * total / args.steps:.2f} ms per step (probe included)")
    for key, seconds in spent.items():
        print(f"{key:14s} {1e3 * seconds / args.steps:6.3f} ms per step")


if __name__ == "__main__":
    main()
