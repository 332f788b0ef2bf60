"""Can the writer keep up with ``flush_every=1``? A probe on a model of many tiny sites, stepped at a
fixed rate, commits every row at once; this counts the rows dropped (no free host slot: the disk
was behind) and times the writer thread's appends.

    python bench/writer.py [--sites 300] [--rate 200] [--steps 4000] [--flush-every 1]

The model is ``--sites`` ``nn.Identity`` modules on a (2, 4) tensor, so that the probe's own work
per step stays well below the step period and the writer is what is measured.
"""

from __future__ import annotations

import argparse
import tempfile
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import actprobe
from actprobe.runfile import storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=300)
    parser.add_argument("--rate", type=float, default=200.0, help="steps per second")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--flush-every", type=int, default=1)
    args = parser.parse_args()

    appends: list[tuple[int, float]] = []
    original = storage.RunFileWriter.append

    def timed(self, steps, *rest, **options):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        original(self, steps, *rest, **options)
        appends.append((len(steps), time.perf_counter() - start))

    storage.RunFileWriter.append = timed  # type: ignore[method-assign]
    model = nn.Sequential(*[nn.Identity() for _ in range(args.sites)])
    x = torch.randn(2, 4, requires_grad=True)
    path = Path(tempfile.mkdtemp(prefix="actprobe-writer-")) / "w.h5"
    period = 1.0 / args.rate
    late = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        with actprobe.Probe(model, path, flush_every=args.flush_every, select=lambda n, m: bool(n)) as probe:
            for step in range(args.steps):
                model(x)
                probe.step()
                wait = start + (step + 1) * period - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                else:
                    late += 1
            dropped = probe._recorder.dropped_rows
            error = probe.error
        seconds = time.perf_counter() - start
    run = actprobe.read(path)
    rows = sum(n for n, _ in appends)
    per_row = sum(t for _, t in appends) / max(rows, 1)
    print(f"{args.sites} sites, flush_every={args.flush_every}, {args.steps} steps at {args.rate:g}/s "
          f"({args.steps / seconds:.0f}/s achieved, {late} steps late)")
    print(f"rows committed {run.rows}, dropped {dropped}; {len(appends)} appends of {rows / max(len(appends), 1):.1f} "
          f"rows on average, {1e3 * per_row:.2f} ms of writer time per row")
    for w in caught:
        print(f"warning: {w.message}")
    if error is not None:  # the figures above would measure a probe that stopped recording
        sys.exit(f"error: the probe stopped recording: {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
