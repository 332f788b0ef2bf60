"""The quick start on real Fashion-MNIST, and the build of the C kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import actprobe
from actprobe.stats import c_backend

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ACTPROBE_DATA"), reason="ACTPROBE_DATA names no local data set")
def test_quickstart_trains_on_fashion_mnist_and_records(tmp_path):
    out = tmp_path / "q.h5"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--steps", "40",
                             "--batch", "64", "--out", str(out)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "data_source" not in result.stdout and "full set (60,000 train + 10,000 test images)" in result.stdout
    run = actprobe.read(out)
    assert run.rows == 40 and len(run.sites) == 11
    assert run.attrs["example"] == "quickstart"
    # PyTorch's default init: the std shrinks from the first conv to the last, as the paper says
    conv_std = run.stats["std"][0, [0, 2, 4, 6]]
    assert np.all(np.diff(conv_std) < 0)
    assert run.scalars["loss"][-1] < run.scalars["loss"][0]


def test_c_kernel_is_built_where_required():
    if os.environ.get("ACTPROBE_REQUIRE_C") != "1":
        pytest.skip("ACTPROBE_REQUIRE_C is not set")
    assert c_backend.available(), "the C extension actprobe.stats._cstats was not built"


@pytest.mark.slow
def test_the_wheel_carries_the_fashion_mnist_sample(tmp_path):
    """A non-editable install must find the offline sample: it is package data of the wheel."""
    import zipfile

    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("actprobe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sample = {f"actprobe/datasets/fashion_mnist_sample/{n}" for n in (
        "README.md", "LICENSE", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    assert sample <= names
