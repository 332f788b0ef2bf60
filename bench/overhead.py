"""Training-step overhead of actprobe and of other ways to watch activations, interleaved in one run.

Workloads (bench/workloads.py): the paper's CNN (default), torchvision's ResNet-50 (bf16,
channels-last, batch 128) and a 12-layer transformer encoder (d=1024, bf16, 16×512 tokens).

Modes, each on its own copy of the model: no probe; a second copy of that baseline (the noise of
the method); actprobe recording every step; every 10th step; with --extras, actprobe with gradient
statistics, with gradient and parameter statistics, both every 10th step, and both every step with histograms
every 10th recorded step; with --torch-kernel, actprobe with its
torch kernel (what runs without the C kernel on a CPU, or without Triton on a GPU); a fastai-style
hook calling ``.item()`` on each statistic; a naive on-device hook (``var_mean``, ``aminmax`` and a
near-zero count, no sync); one plain ``sum()`` per hooked activation (a measured floor). The
memory floor — one read of every hooked activation at the device's copy bandwidth — is computed.

The overhead of a mode is the median over rounds of its step time divided by the baseline's in
the same round, minus one, with quartiles and a 95% interval of that median (order statistics: with 40 rounds
whose quartiles span ±4%, the median alone can stray by about ±1%). ``--select params`` hooks every leaf module that owns
parameters (the reference harness of the GPU targets); ``leaves`` (default) every leaf module,
actprobe's default.

``--before DIR`` adds the actprobe of another checkout (a git worktree of an earlier commit, say),
imported under another name, recording every step and every 10th step on its own copies of the
model: the code before and after a change, timed side by side in the same rounds.

``--only every-step`` or ``--only every-10th`` times the baselines and that one way of recording (with
``--before``, the other checkout's too) and nothing else: a probe recording every step flushes its rows on its
writer thread while the next modes run, and on a machine of few cores that work lands in their rounds. On a
CPU it then also times each step by its position in the round and prints, for each mode, the sum of the
positions' medians against the baseline's, and each position's share: recording every 10th step costs one step in
ten (the recorded one, first in each round) and a little of the next, which the per-round ratio's spread on a
shared machine can hide. With ``--only`` the rounds are also a crossover: two copies of the same model can differ
in speed by a percent or more (where their tensors landed in memory), as much as the overhead measured, so every
copy takes every mode's place for an equal share of the rounds (phase k: mode j on copy (j + k) mod modes; a
probe is attached to its copy for its phase and closed after it), and each phase's median is printed too.

    python bench/overhead.py [--model paper-cnn|resnet50|transformer|wide-100|wide-1000|all] [--device cpu|cuda]
                             [--select leaves|params] [--rounds 60] [--steps 10] [--torch-kernel]
                             [--extras] [--before DIR] [--only all|every-step|every-10th]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import actprobe  # noqa: E402
from actprobe.engine import dispatch  # noqa: E402
from common import interleaved, median_interval, median_ms, paired_overhead, position_overhead  # noqa: E402
from workloads import WORKLOADS, has_parameters_leaf, hooked_bytes, make  # noqa: E402

SELECTIONS = {
    "leaves": lambda name, module: bool(name) and next(module.children(), None) is None,
    "params": has_parameters_leaf,
}


def fastai_style(output: torch.Tensor, store: list) -> None:
    o = output.detach().float()
    store.append((o.mean().item(), o.std().item(), o.min().item(), o.max().item(),
                  (o.abs() <= 0.05).float().mean().item()))


def naive_on_device(output: torch.Tensor, store: list) -> None:
    o = output.detach().float()
    store.append((*torch.var_mean(o), *torch.aminmax(o), (o.abs() <= 0.05).sum(), o.numel()))


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


def copy_bandwidth(device: torch.device, sync) -> float:
    """Bytes per second that one read plus one write of a large buffer achieve (best of 5)."""
    x = torch.empty(256 << 20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(5):
        sync()
        start = time.perf_counter()
        y.copy_(x)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * x.numel() / best


def with_hook(workload, select, hook) -> None:
    store: list = []
    for name, module in workload.model.named_modules():
        if select(name, module):
            module.register_forward_hook(lambda mod, a, out: hook(out, store))
    return store


# A mode's role: given a copy of the model (a workload), what one step of that mode runs; a probe it attaches
# goes into the list of probes, to be closed when the copy moves on to another mode (``bench``)
Role = Callable[[Any], Callable[[], None]]


def build_roles(device: torch.device, args, tmp: Path, probes: list) -> tuple[dict[str, Role], dict[str, Any]]:
    """Each mode's role, and the swapped ``_call_impl`` (engine/dispatch.py's ``DISPATCH``, None without one) of the
    package each probed mode records with."""
    select = SELECTIONS[args.select]
    swaps: dict[str, Any] = {}
    roles: dict[str, Role] = {"baseline": lambda workload: workload.step,
                              "baseline, second copy": lambda workload: workload.step}  # the method's noise

    def probed(label: str, package=actprobe, params: bool = False, **options) -> None:
        def attach(workload):
            extra = {"params": True, "optimizer": workload.train_step.optimizer} if params else {}
            probe = package.Probe(workload.model, tmp / f"probe-{len(probes)}.h5", select=select, **options, **extra)
            probes.append(probe)
            return lambda: probe.step(loss=workload.step())
        roles[label] = attach
        swaps[label] = swap_of(package)

    if args.only in ("all", "every-step"):
        probed("actprobe every step")
        if args.before is not None:
            probed("actprobe before, every step", package=load_before(args.before))
    if args.only in ("all", "every-10th"):
        probed("actprobe every 10th step", every=10)
        if args.before is not None:
            probed("actprobe before, every 10th", package=load_before(args.before), every=10)
    if args.only != "all":  # no other mode's work (a writer thread's flush, say) lands in these modes' rounds
        return roles, swaps
    if args.torch_kernel:
        probed("actprobe, torch kernel", kernel="torch")
    if args.extras:
        probed("actprobe + gradients", grads=True)
        probed("actprobe + grads + params", grads=True, params=True)
        probed("… every 10th step", grads=True, params=True, every=10)
        probed("… + histograms every 10th", grads=True, params=True, hist_every=10)
    for label, hook in (("fastai-style .item()", fastai_style), ("naive on-device", naive_on_device),
                        ("one sum per activation", lambda out, store: store.append(out.detach().sum()))):
        def watched(workload, hook=hook):
            store = with_hook(workload, select, hook)
            return lambda: (workload.step(), store.clear())
        roles[label] = watched
    return roles, swaps


def bench(name: str, device: torch.device, args) -> None:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tmp = Path(tempfile.mkdtemp(prefix="actprobe-bench-"))
    probes: list = []
    roles, swaps = build_roles(device, args, tmp, probes)
    labels = list(roles)
    copies = [make(name, device, args.batch, smoke=args.smoke) for _ in labels]
    # --only: a crossover. Two copies of the same model can differ in speed by a percent or more (where their
    # tensors landed in memory), as much as the overhead measured: so every copy takes every mode's place once,
    # for an equal share of the rounds (phase k: mode j on copy (j + k) mod modes), and the copies' differences
    # cancel out of the pooled rounds. Without --only the copies keep their modes (hooks of other tools stay).
    phases = len(labels) if args.only != "all" else 1
    per_phase = -(-args.rounds // phases)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    by_phase: dict[str, list[float]] = {label: [] for label in labels}
    # with one way of recording only (--only), on a CPU: each step timed by its position in the round as well
    positions: dict[str, list[list[float]]] | None = {} if args.only != "all" and device.type == "cpu" else None
    kernel = run_file = None
    for phase in range(phases):
        first = len(probes)
        modes = {}
        for j, label in enumerate(labels):
            with call_impl_for(None):  # each probe begins as in a process of its own: with PyTorch's _call_impl
                modes[label] = roles[label](copies[(j + phase) % len(copies)])
        got = interleaved(modes, rounds=per_phase, steps=args.steps, warmup=args.warmup, sync=sync,
                          positions=positions, around=lambda label: call_impl_for(swaps.get(label)))
        for label in labels:
            samples[label] += got[label]
            by_phase[label].append(statistics.median(v / b - 1 for v, b in zip(got[label], got["baseline"])))
        if kernel is None and len(probes) > first:
            kernel, run_file = kernel_name(probes[first]), probes[first].path  # before close(), which drops plans
        for probe in probes[first:]:
            probe.close()  # its hooks go: the copy is a plain model again for the next phase
            if getattr(probe, "rows_written", 1) == 0:  # (the timing of a probe that recorded nothing means nothing)
                sys.exit(f"error: the probe of phase {phase + 1} wrote no row to {probe.path}")
    base_ms = median_ms(samples["baseline"])
    floor_bytes = hooked_bytes(make(name, device, args.batch, smoke=args.smoke), SELECTIONS[args.select])
    floor_ms = 1e3 * floor_bytes / copy_bandwidth(device, sync)
    run = actprobe.read(run_file)
    rounds = phases * per_phase
    crossover = f", in {phases} phases: each copy of the model in each mode's place once" if phases > 1 else ""
    print(f"\n{name}{' (SMOKE: tiny inputs, times mean nothing)' if args.smoke else ''}, {machine(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"select={args.select} ({len(run.sites)} sites), {rounds} rounds x {args.steps} steps per mode{crossover}")
    print(f"{'mode':28s} {'ms/step':>9s} {'overhead':>9s} {'(quartiles)':>16s}   (95% interval of the median)")
    for mode, values in samples.items():
        median, q1, q3 = paired_overhead(values, samples["baseline"])
        low, high = median_interval(values, samples["baseline"])
        print(f"{mode:28s} {median_ms(values):9.2f} {100 * median:+8.1f}%  ({100 * q1:+5.1f}% .. {100 * q3:+5.1f}%)"
              f"   ({100 * low:+5.1f}% .. {100 * high:+5.1f}%)")
    print(f"{'memory floor (computed)':28s} {floor_ms:9.2f} {100 * floor_ms / base_ms:+8.1f}%  "
          f"({floor_bytes / 2**20:.1f} MiB of hooked activations per step at the copy bandwidth)")
    for now, before, what in (("actprobe every step", "actprobe before, every step", "every step"),
                               ("actprobe every 10th step", "actprobe before, every 10th", "every 10th step")):
        if before in samples:
            median, q1, q3 = paired_overhead(samples[now], samples[before])
            print(f"{'this actprobe vs before':28s} {'':9s} {100 * median:+8.1f}%  ({100 * q1:+5.1f}% .. "
                  f"{100 * q3:+5.1f}%)  (paired per round: {what}, this code / the code of --before)")
    if phases > 1:
        print("each phase's median against the baseline's (the copies' differences, which the pooled rounds cancel):")
        for mode, medians in by_phase.items():
            print(f"{mode:28s} " + " ".join(f"{100 * m:+5.1f}%" for m in medians))
    if positions:
        print("by position in the round (the sum of each position's median step, against the baseline's):")
        for mode, times in positions.items():
            print(f"{mode:28s} {'':9s} {100 * position_overhead(times, positions['baseline']):+8.2f}%")
        base = [statistics.median(t) for t in positions["baseline"]]
        round_time = sum(base)
        print("each position's median against the baseline's, in % of the baseline's round:")
        for mode, times in positions.items():
            shares = (100 * (statistics.median(t) - b) / round_time for t, b in zip(times, base))
            print(f"{mode:28s} " + " ".join(f"{share:+5.2f}" for share in shares))
    print(f"actprobe wrote {run.rows} rows x {len(run.sites)} sites with the {kernel} kernel"
          f"{' (its first copy)' if phases > 1 else ''}")


@contextmanager
def call_impl_for(swap: Any) -> Iterator[None]:
    """The ``nn.Module._call_impl`` a mode's block runs with: the swapped one of the package whose probe records it
    while that probe holds it (engine/dispatch.py: from a probe's first recorded step until it closes), PyTorch's
    for every other mode, as each would have in a training process of its own (else a baseline's every module call
    pays ~0.15 µs, and a probe of --before's package finds this checkout's function, not its own). Set before a
    block, outside the timed span, when it is not the one in place: a change of the class makes Python re-specialise
    the code that touches modules, in the rotating order of the rounds for every mode alike. (Each change counts
    against CPython 3.13's 1,000 versions of a class, engine/dispatch.py: ``main`` says so on 3.13.)"""
    wanted = swap.call_impl if swap is not None and swap.holders else dispatch.ORIGINAL_CALL_IMPL
    if nn.Module.__dict__.get("_call_impl") is not wanted:
        nn.Module._call_impl = wanted
    yield


def swap_of(package: Any) -> Any:
    """A package's swapped ``_call_impl`` (``engine.dispatch.DISPATCH``), None where it has none (older checkouts)."""
    try:
        return importlib.import_module(f"{package.__name__}.engine.dispatch").DISPATCH
    except (ImportError, AttributeError):
        return None


def kernel_name(probe: actprobe.Probe) -> str:
    return "+".join(probe.kernels) or "no"


def load_before(folder: Path):
    """The ``actprobe`` package of checkout ``folder``, imported as ``actprobe_before`` (its C kernel
    must be built there: ``python setup.py build_ext --inplace``)."""
    if "actprobe_before" in sys.modules:
        return sys.modules["actprobe_before"]
    package = folder / "actprobe"
    spec = importlib.util.spec_from_file_location("actprobe_before", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    if spec is None or not (package / "__init__.py").exists():
        sys.exit(f"error: --before {folder}: no actprobe package there")
    module = importlib.util.module_from_spec(spec)
    sys.modules["actprobe_before"] = module
    spec.loader.exec_module(module)
    swap_of(module)  # its engine imported now, before any probe: it takes PyTorch's own _call_impl for the original
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="paper-cnn", choices=[*WORKLOADS, "all"])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--steps", type=int, default=10,
                        help="steps per mode and round (a multiple of 10: each round records the same share of every 10th)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per mode first")
    parser.add_argument("--batch", type=int, default=None, help="override the workload's batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--select", default="leaves", choices=sorted(SELECTIONS))
    parser.add_argument("--torch-kernel", action="store_true", help="also time actprobe's torch kernel")
    parser.add_argument("--extras", action="store_true",
                        help="also time gradient statistics (grads=True) and parameter statistics (params=True)")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout whose actprobe is timed beside this one (before/after a change)")
    parser.add_argument("--only", default="all", choices=["all", "every-step", "every-10th"],
                        help="time only the baselines and actprobe recording every step (and --before's), or every "
                             "10th step: no other copy's work runs between their rounds")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny inputs: checks that the benchmark runs (on a CPU in seconds); times mean nothing")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the quartiles need two rounds)")
    device = torch.device(args.device)
    if sys.version_info >= (3, 13) and dispatch.DISPATCH is not None:
        print("note: Python 3.13 gives a class at most 1,000 versions; the modes' blocks change nn.Module._call_impl "
              "a few times a round, so past a few hundred rounds in one process every mode runs with modules that "
              "Python no longer specialises (engine/dispatch.py). Compare runs of equal length, or use Python 3.11/3.12.")
    for name in WORKLOADS if args.model == "all" else (args.model,):
        bench(name, device, args)


if __name__ == "__main__":
    main()
