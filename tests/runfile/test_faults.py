"""Write errors at every HDF5 write and flush of the commit cycle, and a real one (RLIMIT_FSIZE with
SIGXFSZ ignored): training is bit-identical, one warning, a clean exit, every committed row readable
by ``actprobe.read`` and ``show``, and no row that was not committed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import actprobe
from actprobe.cli import app

pytestmark = pytest.mark.slow  # child processes train 58 times
CHILD = Path(__file__).with_name("_faulty_writer.py")
sys.path.insert(0, str(CHILD.parent))
from _faulty_writer import FLUSH_EVERY, OPS_PER_CYCLE, STEPS, TOTAL_OPS  # noqa: E402


def _child(*args: str) -> tuple[list[dict], subprocess.CompletedProcess]:
    result = subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()], result


@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    runs, _ = _child(str(folder), "inject")
    return folder, runs


def _committed_before(k: int) -> int:
    """Rows committed before fault point k: 0 is the creation's flush, then one cycle per flush."""
    return 0 if k == 0 else ((k - 1) // OPS_PER_CYCLE) * FLUSH_EVERY


def _same_rows(path: Path, reference: actprobe.Run, rows: int) -> None:
    run = actprobe.read(path)
    assert run.rows == rows and run.step.tolist() == list(range(rows))
    for name in actprobe.STATISTICS:
        np.testing.assert_array_equal(run.stats[name], reference.stats[name][:rows])
    for name in ("loss", "lr"):
        np.testing.assert_array_equal(run.scalars[name], reference.scalars[name][:rows])


def test_the_fault_points_cover_the_commit_cycle(injected):
    folder, runs = injected
    assert len(runs) == TOTAL_OPS + 1
    assert runs[-1]["k"] is None and runs[-1]["ops"] == TOTAL_OPS  # the model of the cycle is right
    assert runs[-1]["warnings"] == [] and runs[-1]["rows_written"] == STEPS


@pytest.mark.parametrize("k", range(TOTAL_OPS))
def test_a_write_error_at_each_point(injected, k):
    folder, runs = injected
    reference_run, faulty = runs[-1], runs[k]
    assert faulty["k"] == k
    assert faulty["losses"] == reference_run["losses"]  # training is bit-identical
    assert len(faulty["warnings"]) == 1 and "No space left on device" in faulty["warnings"][0]
    rows = _committed_before(k)
    assert faulty["rows_written"] == rows
    path = folder / f"k{k}.h5"
    if k == 0:  # the file's creation failed: no half-made file is left
        assert not path.exists()
        return
    _same_rows(path, actprobe.read(folder / "reference.h5"), rows)
    result = CliRunner().invoke(app, ["show", str(path)])
    assert result.exit_code == 0, result.output
    expected = f"{rows} recorded steps" if rows else "no rows committed yet (its writer stopped before its first"
    assert expected in " ".join(result.output.split())


@pytest.mark.parametrize("fraction", [0.2, 0.45, 0.7, 0.95])
def test_a_real_file_size_limit(injected, tmp_path, fraction):
    folder, runs = injected
    reference = folder / "reference.h5"
    limit = int(fraction * reference.stat().st_size)
    (faulty,), _ = _child(str(tmp_path), "fsize", str(limit))
    assert faulty["losses"] == runs[-1]["losses"]
    assert len(faulty["warnings"]) == 1 and "File too large" in faulty["warnings"][0], faulty["warnings"]
    path = tmp_path / f"fsize{limit}.h5"
    rows_written = faulty["rows_written"]
    if not path.exists():  # the limit fell inside the file's creation
        assert rows_written == 0
        return
    run = actprobe.read(path)
    assert run.closed is False
    # rows the writer counted are all there; one more flush may have reached the disk before the error
    assert run.rows in (rows_written, rows_written + FLUSH_EVERY)
    _same_rows(path, actprobe.read(reference), run.rows)
    assert CliRunner().invoke(app, ["show", str(path)]).exit_code == 0
