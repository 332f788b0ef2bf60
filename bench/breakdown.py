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
from actprobe.engine import probe as probe_module, recorder  # noqa: E402
from actprobe.stats import c_backend  # noqa: E402
from workloads import make  # noqa: E402

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
    moments = staticmethod(timed("C kernel", c_backend._cstats.moments)) if c_backend.available() else None
    masked = staticmethod(c_backend._cstats.masked) if c_backend.available() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    if not c_backend.available():
        sys.exit("error: the C kernel is not built")
    c_backend._cstats = TimedC  # this script's instrument: it times the private extension in place
    recorder.Recorder.observe = timed("hooks (all)", recorder.Recorder.observe)
    probe_module.Probe.step = timed("probe.step()", probe_module.Probe.step)
    workload = make("paper-cnn", torch.device("cpu"), 256)
    with actprobe.Probe(workload.model, Path(tempfile.mkdtemp()) / "breakdown.h5") as probe:
        workload.run(20, probe)
        for key in spent:
            spent[key] = 0.0
        total = workload.run(args.steps, probe).seconds
    print(f"{args.steps} steps, {1e3 * total / args.steps:.2f} ms per step (probe included)")
    for key, seconds in spent.items():
        print(f"{key:14s} {1e3 * seconds / args.steps:6.3f} ms per step")


if __name__ == "__main__":
    main()
