"""What the commands that read a run file cost on a long run: wall time and peak memory of
``actprobe info``, ``show``, ``diagnose`` and ``plot`` (each in a fresh process) on a generated valid file,
against plain h5py reading the first and last rows. Peak memory is the process's VmHWM (Linux),
which, unlike ru_maxrss, does not inherit the benchmark's own high-water mark. The commands see a
terminal ``--columns`` wide (120 by default), and ``show`` once more at 80 columns, where its table's
pairs drop their spaces to fit (or, when that is not enough, rich wraps its cells).

    python bench/reader.py [--rows 100000] [--sites 500] [--file PATH] [--columns 120]

The file (rows × sites × 8 float32 statistics: 1.6 GB at the defaults) is written with actprobe's own
writer and kept in a temporary folder, or at ``--file`` (reused if it exists).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from actprobe.runfile.format import STATISTICS, Site
from actprobe.runfile.storage import RunFileWriter

PROBE = """
import runpy, sys, time
start = time.perf_counter()
sys.argv = ["actprobe", *{args!r}]
try:
    runpy.run_module("actprobe", run_name="__main__")
except SystemExit:
    pass
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
sys.stderr.write(f"\\nBENCH {{time.perf_counter() - start:.3f}} {{peak}}\\n")
"""

PLAIN_H5PY = """
import sys, time
start = time.perf_counter()
import h5py
with h5py.File({path!r}, "r") as f:
    rows = f["step"].shape[0]
    first = {{name: f["stats"][name][0] for name in f["stats"]}}
    last = {{name: f["stats"][name][rows - 1] for name in f["stats"]}}
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
sys.stderr.write(f"\\nBENCH {{time.perf_counter() - start:.3f}} {{peak}}\\n")
"""


def generate(path: Path, rows: int, sites: int, batch: int = 2000) -> None:
    """A valid run file of ``rows`` rows: a Linear/ReLU chain whose statistics drift slowly."""
    kinds = ["Linear" if k % 2 == 0 else "ReLU" for k in range(sites)]
    writer = RunFileWriter(path, sites=[Site(str(k), kind, -1) for k, kind in enumerate(kinds)],
                           scalar_names=["loss"], attributes={"near_zero_eps": 0.05, "dead_eps": 1e-6, "every": 1},
                           chunk_rows=100)
    rng = np.random.default_rng(0)
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        stats = np.empty((n, sites, len(STATISTICS)))
        values = {"count": 2048.0, "mean": 0.1, "std": 1.0, "min": -3.0, "max": 3.0, "near_zero": 0.3,
                  "dead": 0.0, "nonfinite": 0.0}
        for k, name in enumerate(STATISTICS):
            stats[:, :, k] = values[name] * (1 + 0.01 * rng.standard_normal((n, sites)))
        steps = np.arange(start, start + n)
        writer.append(steps, steps * 0.01, stats, rng.random((n, 1)))
    writer.close()


def measure(code: str, columns: int = 120) -> tuple[float, float]:
    """Seconds and peak MiB of ``code`` in a fresh process whose terminal is ``columns`` wide (its output
    goes to a pipe; rich reads the width from COLUMNS)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": str(columns)})
    line = [entry for entry in done.stderr.splitlines() if entry.startswith("BENCH ")]
    if not line:
        raise SystemExit(f"the command failed:\n{done.stdout}\n{done.stderr}")
    seconds, kib = line[-1].split()[1:]
    return float(seconds), int(kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--file", type=Path, default=None)
    parser.add_argument("--columns", type=int, default=120, help="the terminal's width the commands see")
    args = parser.parse_args()
    path = args.file or Path(tempfile.mkdtemp(prefix="actprobe-reader-")) / "long.h5"
    if not path.exists():
        generate(path, args.rows, args.sites)
    print(f"{path}: {path.stat().st_size / 2**30:.2f} GiB; a terminal {args.columns} columns wide")
    print(f"{'reading':24s} {'seconds':>8s} {'peak MiB':>9s}")
    seconds, mib = measure(PLAIN_H5PY.format(path=str(path)))
    print(f"{'h5py, first + last rows':24s} {seconds:8.2f} {mib:9.0f}")
    figures = Path(tempfile.mkdtemp(prefix="actprobe-reader-plot-"))
    for command in (["info"], ["show"], ["show", "--flagged"], ["diagnose"], ["plot", "--out", str(figures)]):
        seconds, mib = measure(PROBE.format(args=[*command, str(path)]), args.columns)
        print(f"{'actprobe ' + ' '.join(command[:2]):24s} {seconds:8.2f} {mib:9.0f}")
    seconds, mib = measure(PROBE.format(args=["show", str(path)]), 80)  # a narrow terminal
    print(f"{'actprobe show, 80 columns':24s} {seconds:8.2f} {mib:9.0f}")


if __name__ == "__main__":
    main()
