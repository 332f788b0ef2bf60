"""Where actprobe's per-step time goes on the CPU: the hooks, the C kernel's general calls, and step().

"C kernel" times the kernel's general entry point (``_cstats.moments``: the first recorded step, and outputs
unlike their site's last ones), wrapped with time.perf_counter, and "probe.step()" the end of each step, timed
around the call, over a training run of a workload (the paper's CNN, batch 256, by default). "hooks" is what the probe's hooks add to a
forward pass, PyTorch's own hook dispatch included: the median of forwards with the hooks minus the median of
forwards without them (taken out, as on an unrecorded step), alternating, after the run. The common case after
the first step, a site's lane, runs inside a hook written in C (``_cstats.Hook``), which no Python wrapper can
time without adding a frame of its own; "(an empty hook)" is what a Python hook that does nothing, on the same
modules, adds to a forward the same way: PyTorch's cost of dispatching a hook at all, the floor of any hook.
Prints milliseconds per step for each (means), and microseconds per site,
beside the step time; for ``probe.step()`` its median call too. The warm-up steps fill every ring buffer once (their first pass pays the page faults).

    python bench/breakdown.py [--model paper-cnn|wide-100|wide-1000] [--steps 200] [--warmup 400]
    python bench/breakdown.py --every 10 [--model …] [--steps 3000]

With ``--every K`` it measures what recording every K-th step costs, from medians over many steps of one
process instead of paired rounds (whose spread on a shared machine is larger than the effect): each
training step of the probed model and each ``probe.step()`` are timed apart, the recorded ones apart from
the others, and a copy of the model without a probe runs a step after each (a check: unrecorded steps run
without hooks, so they should take what the copy takes). The cost of K steps is then the recorded
training step's extra time, one recorded ``probe.step()`` (hooks taken out) and K − 1 unrecorded ones
(hooks put back before the next recorded step), relative to K unrecorded steps. With ``--every 1`` every
step is recorded, and the reference is the copy without a probe (two models: the check's spread applies).

"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import actprobe  # noqa: E402
import actprobe.engine.hooks  # noqa: E402,F401  (set up with the real extension, before TimedC stands in for it)
from actprobe.stats import c_backend, merge  # noqa: E402
from workloads import make  # noqa: E402

spent = {"C kernel": 0.0, "probe.step()": 0.0, "merged in step()": 0.0}


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
    parser.add_argument("--every", type=int, default=None, help="record every K-th step: the every-K estimate")
    args = parser.parse_args()
    if args.every is not None:
        every_k(args.model, args.every, args.steps, min(args.warmup, 100))
        return
    if not c_backend.available():
        sys.exit("error: the C kernel is not built")
    c_backend._cstats = TimedC  # this script's instrument: it times the private extension in place
    # rows merged on the training thread: only when every ring buffer is still with the writer thread
    merge.PartialRing.merge = timed("merged in step()", merge.PartialRing.merge)
    workload = make(args.model, torch.device("cpu"))
    with actprobe.Probe(workload.model, Path(tempfile.mkdtemp()) / "breakdown.h5") as probe:
        train(workload, probe, args.warmup)
        for key in spent:
            spent[key] = 0.0
        total = train(workload, probe, args.steps)
        sites = len(probe.sites)
        hooks, empty = hooks_cost(workload, probe, args.steps)
    print(f"{args.model}: {sites} sites, {args.steps} steps, {1e3 * total / args.steps:.2f} ms per step (probe included)")
    for key, seconds in {"hooks": hooks * args.steps, **spent, "(an empty hook)": empty * args.steps}.items():
        print(f"{key:20s} {1e3 * seconds / args.steps:7.3f} ms per step {1e6 * seconds / args.steps / sites:8.2f} µs per site")
    middle = statistics.median(step_calls)  # (the rows above are means: a preempted call weighs in them)
    print(f"{'probe.step(), median':20s} {1e3 * middle:7.3f} ms per step {1e6 * middle / sites:8.2f} µs per site")


step_calls: list[float] = []  # each probe.step()'s seconds, for its median beside the mean


def train(workload, probe, steps: int) -> float:
    """Seconds of ``steps`` training steps, each followed by ``probe.step(loss=…)``, timed around the call as a
    training loop makes it (a wrapper around Probe.step would add a Python frame of its own to what it times)."""
    clock = time.perf_counter
    total = 0.0
    step_calls.clear()
    for _ in range(steps):
        start = clock()
        loss = workload.step()
        middle = clock()
        probe.step(loss=loss)
        end = clock()
        total += end - start
        spent["probe.step()"] += end - middle
        step_calls.append(end - middle)
    return total


def hooks_cost(workload, probe, rounds: int) -> tuple[float, float]:
    """Seconds the probe's hooks add to one forward pass of a recorded step, and what an empty Python hook
    (registered with kwargs, as the probe's are) on the same modules adds: PyTorch's dispatch of a hook at
    all. Alternating forwards with the probe's hooks, without them (taken out, as on an unrecorded step) and
    with the empty hooks instead, in training mode; each forward's partials are dropped, so that the arena is
    the same for every one."""
    model, inputs = workload.model, workload.batch[0]
    engine, recorder = probe._engine, probe._recorder  # this script's instrument: the probe's own parts
    hooked = [model.get_submodule(name) for name in engine._slots]
    times: dict[str, list[float]] = {"probe": [], "none": [], "empty": []}
    for _ in range(rounds):
        for mode in times:
            handles = []
            if mode != "probe":
                engine.detach()
            if mode == "empty":
                handles = [module.register_forward_hook(lambda *args: None, with_kwargs=True) for module in hooked]
            start = time.perf_counter()
            model(inputs)
            times[mode].append(time.perf_counter() - start)
            for handle in handles:
                handle.remove()
            engine.attach()
            recorder.discard_step()
            engine.new_step()
    none = statistics.median(times["none"])
    return statistics.median(times["probe"]) - none, statistics.median(times["empty"]) - none


def every_k(model: str, k: int, steps: int, warmup: int) -> None:
    probed, plain = make(model, torch.device("cpu")), make(model, torch.device("cpu"))
    times: dict[str, list[float]] = {"train, recorded": [], "train, unrecorded": [], "train, no probe": [],
                                     "step(), recorded": [], "step(), unrecorded": []}
    clock = time.perf_counter
    with actprobe.Probe(probed.model, Path(tempfile.mkdtemp()) / "every.h5", every=k) as probe:
        for index in range(warmup + steps):
            kind = "recorded" if probe.recording else "unrecorded"
            start = clock()
            loss = probed.step()
            middle = clock()
            probe.step(loss=loss)
            end = clock()
            plain.step()
            if index >= warmup:
                times[f"train, {kind}"].append(middle - start)
                times[f"step(), {kind}"].append(end - middle)
                times["train, no probe"].append(clock() - end)
    median = {key: statistics.median(values) for key, values in times.items() if values}
    mean = {key: statistics.fmean(values) for key, values in times.items() if values}
    idle = median["train, unrecorded"] if k > 1 else median["train, no probe"]
    extra = median["train, recorded"] - idle + mean["step(), recorded"]
    if k > 1:
        extra += (k - 1) * mean["step(), unrecorded"]
    which = "every step" if k == 1 else f"one step in {k}"
    print(f"{model}, recording {which}, {steps} steps: medians of the training steps, means of step()")
    for key in times:
        if times[key]:
            value = median[key] if key.startswith("train") else mean[key]
            print(f"{key:20s} {1e3 * value:8.3f} ms  ({len(times[key])} steps)")
    if k > 1:
        print(f"unrecorded / no probe: {100 * (idle / median['train, no probe'] - 1):+.1f}% (the check)")
    print(f"cost of recording {which}: {1e3 * extra:.3f} ms per {k} step{'s' if k > 1 else ''}, "
          f"{100 * extra / (k * idle):+.2f}% of their time")


if __name__ == "__main__":
    main()
