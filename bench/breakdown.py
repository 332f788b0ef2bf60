"""Where actprobe's per-step time goes on the CPU: the C kernel, the rest of the hooks, and step().

"C kernel" times the kernel's general entry point (``_cstats.moments``: the first recorded step, and outputs
unlike their site's last ones); "lanes" the sites' lanes (``c_backend.run_lane``: the common case after
the first step, one C call that checks the output and runs the same kernel). "hooks (all)" includes both.

Wraps the parts with time.perf_counter over a training run of a workload (the paper's CNN, batch 256,
by default) and prints milliseconds per step for each, and microseconds per site, beside the step
time. The warm-up steps fill every ring buffer once (their first pass pays the page faults).

    python bench/breakdown.py [--model paper-cnn|wide-100|wide-1000] [--steps 200] [--warmup 400]
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
from actprobe.stats import c_backend, merge  # noqa: E402
from workloads import make  # noqa: E402

spent = {"C kernel": 0.0, "lanes": 0.0, "hooks (all)": 0.0, "probe.step()": 0.0, "merged in step()": 0.0}


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
    set_team = staticmethod(c_backend._cstats.set_team) if c_backend.available() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="paper-cnn", choices=["paper-cnn", "wide-100", "wide-1000"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=400)
    args = parser.parse_args()
    if not c_backend.available():
        sys.exit("error: the C kernel is not built")
    c_backend._cstats = TimedC  # this script's instrument: it times the private extension in place
    c_backend.run_lane = timed("lanes", c_backend.run_lane)
    recorder.Recorder.observe = timed("hooks (all)", recorder.Recorder.observe)
    probe_module.Probe.step = timed("probe.step()", probe_module.Probe.step)
    # rows merged on the training thread: only when every ring buffer is still with the writer thread
    merge.PartialRing.merge = timed("merged in step()", merge.PartialRing.merge)
    workload = make(args.model, torch.device("cpu"))
    with actprobe.Probe(workload.model, Path(tempfile.mkdtemp()) / "breakdown.h5") as probe:
        workload.run(args.warmup, probe)
        for key in spent:
            spent[key] = 0.0
        total = workload.run(args.steps, probe).seconds
        sites = len(probe.sites)
    print(f"{args.model}: {sites} sites, {args.steps} steps, {1e3 * total / args.steps:.2f} ms per step (probe included)")
    for key, seconds in spent.items():
        print(f"{key:18s} {1e3 * seconds / args.steps:7.3f} ms per step {1e6 * seconds / args.steps / sites:8.2f} µs per site")


if __name__ == "__main__":
    main()
