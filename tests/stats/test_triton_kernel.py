"""The Triton kernel (what CUDA tensors use) on the CPU, in Triton's interpreter: every statistic
against the float64 NumPy reference and against the torch kernel, then a whole probed run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.slow,  # Triton's interpreter
              pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")]


def _interpret(what: str, **env: str) -> str:
    result = subprocess.run([sys.executable, str(HERE / "_triton_cases.py"), what], capture_output=True, text=True,
                            timeout=900, env={**os.environ, "TRITON_INTERPRET": "1", **env})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_triton_kernel_matches_the_reference_and_the_torch_kernel():
    assert "PASS kernel" in _interpret("kernel")


def test_probed_training_with_the_triton_kernel():
    assert "PASS probed training" in _interpret("training", ACTPROBE_KERNEL="triton")
