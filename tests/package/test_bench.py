"""Every benchmark script in bench/ runs, on tiny settings, and says what it measured (no figure is judged:
the figures belong to bench runs on a quiet machine, never to tests)."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

RUNS = {
    "overhead": (["overhead.py", "--smoke", "--model", "wide-100", "--rounds", "2", "--warmup", "1"],
                 "actprobe every step"),
    "overhead-only": (["overhead.py", "--smoke", "--model", "wide-100", "--rounds", "2", "--warmup", "1",
                       "--only", "every-10th"], "by position in the round"),
    # --before: a copy of this checkout's package, imported under another name (its probes must record: each begins
    # with its own package's _call_impl, and the benchmark stops on a probe that wrote no row)
    "overhead-before": (["overhead.py", "--smoke", "--model", "wide-100", "--rounds", "2", "--warmup", "1",
                         "--only", "every-step", "--before", "{before}"], "actprobe before, every step"),
    "aftermath": (["aftermath.py", "--steps", "40", "--every", "10"], "modules against the control after the run"),
    "breakdown": (["breakdown.py", "--model", "wide-100", "--steps", "5", "--warmup", "5"], "hooks"),
    "breakdown-every": (["breakdown.py", "--model", "wide-100", "--every", "3", "--steps", "9", "--warmup", "2"],
                        "cost of recording one step in 3"),
    "kernel": (["kernel.py", "--rounds", "2"], "(256, 64)"),
    "writer": (["writer.py", "--sites", "20", "--steps", "60", "--rate", "400"], "rows committed "),
    "reader": (["reader.py", "--rows", "300", "--sites", "20"], "actprobe show"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_benchmark_runs(name, tmp_path):
    arguments, expected = RUNS[name]
    if "{before}" in arguments:  # a copy: the same extension file loaded twice would share its C state
        shutil.copytree(BENCH.parent / "actprobe", tmp_path / "before" / "actprobe",
                        ignore=shutil.ignore_patterns("__pycache__"))
        arguments = [str(tmp_path / "before") if a == "{before}" else a for a in arguments]
    environment = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCH / arguments[0]), *arguments[1:]], capture_output=True,
                          text=True, cwd=tmp_path, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout, done.stdout[-2000:]
    assert "stopped recording" not in done.stdout + done.stderr
    assert "nothing was recorded" not in done.stdout + done.stderr
    if name == "writer":  # a busy machine may drop rows (a figure, never judged here); none may go missing
        committed, dropped = map(int, re.search(r"rows committed (\d+), dropped (\d+)", done.stdout).groups())
        assert committed + dropped == 60 and committed > 0, done.stdout


def _coverage(n: int, k: int) -> Fraction:
    """The probability that the k-th smallest and k-th largest of n samples (0-based) enclose the median."""
    return Fraction(sum(math.comb(n, below) for below in range(k + 1, n - k)), 2 ** n)


@pytest.mark.parametrize("n", [*range(1, 60), 100, 150, 300, 1000, 3000])
def test_the_interval_of_the_median_is_the_tightest_that_covers_it_95_percent(n):
    sys.path.insert(0, str(BENCH))
    try:
        from common import median_interval, order_statistic
    finally:
        sys.path.remove(str(BENCH))
    k = order_statistic(n)
    assert 0 <= k < max(n // 2, 1)
    if _coverage(n, 0) >= Fraction(95, 100):  # from 6 samples on
        assert _coverage(n, k) >= Fraction(95, 100) > _coverage(n, k + 1)
    else:
        assert k == 0
    rounds = [1 + r / 100 for r in range(n)][::-1]  # ratios 0, 0.01, … against a baseline of 1, out of order
    assert median_interval(rounds, [1.0] * n) == (rounds[n - 1 - k] - 1, rounds[k] - 1)
