"""The C kernel alone, data in cache: microseconds per call of ``_cstats.moments`` on the activations of
the paper's CNN and of the wide models, on the calling thread and with torch's OpenMP team.

Each shape is timed in rounds of calls on one tensor (the best round's mean), the two modes alternating.
The team reads a tensor only from 2^17 values on; smaller ones show the same time twice. Run with
``PYTHONPATH`` set to an older checkout (built in place), it times that checkout's kernel (one thread
only, if it has no team).

    python bench/kernel.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from actprobe.stats import c_backend

# (A rows, E units, B values per unit and row): what the kernel sees
SHAPES = {
    "paper CNN conv1 / ReLU (256, 8, 14, 14)": (256, 8, 196),
    "paper CNN conv2 / ReLU (256, 16, 7, 7)": (256, 16, 49),
    "(256, 16, 10, 10)": (256, 16, 100),
    "(64, 256, 14, 14)": (64, 256, 196),
    "Linear (256, 64)": (256, 64, 1),
    "wide models' Linear (32, 64)": (32, 64, 1),
    "Linear of one output (4096, 1)": (4096, 1, 1),
    "one channel (256, 1, 28, 28)": (256, 1, 784),
}


def best_microseconds(args: tuple, rounds: int, calls: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            c_backend._cstats.moments(*args)
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if not c_backend.available():
        sys.exit("error: the C kernel is not built")
    has_team = hasattr(c_backend._cstats, "set_team")
    team = c_backend.openmp_entry_points() if has_team else (0, 0, 0)
    print(f"{c_backend.__file__}: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OpenMP team {'found' if all(team) else 'not found'}")
    print(f"{'tensor':44s} {'one thread µs':>14s} {'team µs':>9s}")
    for label, (a, e, b) in SHAPES.items():
        x = torch.randn(a, e, b)
        out = torch.empty(4 * e + 4, dtype=torch.float64)
        call = (False, x.data_ptr(), a, e, b, 0.05, out.data_ptr())
        calls = max(20, int(2e7 // x.numel()))
        times = {"one": float("inf"), "team": float("inf")}
        for _ in range(2):  # alternate, so that a drift of the machine's speed falls on both
            if has_team:
                c_backend._cstats.set_team(0, 0, 0)
            times["one"] = min(times["one"], best_microseconds(call, args.rounds, calls))
            if has_team:
                c_backend._cstats.set_team(*team)
                times["team"] = min(times["team"], best_microseconds(call, args.rounds, calls))
        shown = f"{times['team']:9.1f}" if has_team else f"{'—':>9s}"
        print(f"{label:44s} {times['one']:14.1f} {shown}")
    if has_team:
        c_backend.share_torch_threads()


if __name__ == "__main__":
    main()
