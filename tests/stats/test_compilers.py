"""The C kernel built by GCC and by clang: its NaN/Inf tests must survive each compiler's
optimisations (setup.py's flags), against the float64 reference."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actprobe.runfile.format import HIST_EDGES
from actprobe.stats import c_backend, histogram, merge
from actprobe.stats.arena import Arena
from actprobe.stats.dispatch import MomentKernel
from actprobe.stats.single import tensor_statistics
from conftest import assert_statistics_close, reference_statistics

pytestmark = pytest.mark.slow  # compiles the extension twice
ROOT = Path(__file__).resolve().parents[2]


def _cases():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 8, 4, 4, generator=gen)
    nan_inf = x.clone()
    nan_inf[0, 0, 0, 0], nan_inf[3, 2, 1, 1], nan_inf[:, 5] = float("nan"), float("inf"), float("nan")
    yield "NaN and Inf", nan_inf, 1
    only_inf = x.clone()
    only_inf[2, 3, 0, 0], only_inf[4, 1, 2, 2] = float("inf"), -float("inf")
    yield "+Inf and -Inf", only_inf, 1
    flat = torch.randn(512, generator=gen)
    flat[7], flat[300] = float("nan"), float("nan")
    yield "two NaN in 512 values", flat, None
    yield "mean 1e4 x std", x + 1e4, 1
    outlier = x.clone()
    outlier[0, :, 0, 0] = 1000.0  # every unit starts with a 1000-sigma outlier
    yield "outlier first", outlier, 1
    yield "float64 with NaN", nan_inf.double(), 1
    huge = x.clone()
    huge[1, 4, 2, 2] = 3e20  # finite, but its square is not in float32
    yield "a square beyond float32", huge, 1
    large = torch.randn(256, 8, 14, 14, generator=gen) * 3 + 1  # read in parts by torch's OpenMP team (2 threads)
    yield "a large tensor", large, 1
    large_nan = large.clone()
    large_nan[200, 1, 3, 3] = float("nan")  # in the second part
    yield "a large tensor with a NaN in its second part", large_nan, 1


def _load(build: Path, name: str):
    """The extension ``name`` from the build in ``build``/lib."""
    (library,) = (build / "lib").rglob(f"{name}*.so")
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def newest_clang() -> str:
    """The newest clang on PATH (clang-19 before clang-14 before plain clang): recent versions are the
    ones that fold finiteness tests away under -ffast-math."""
    names = {Path(p).name for folder in os.environ.get("PATH", "").split(os.pathsep) if os.path.isdir(folder)
             for p in Path(folder).glob("clang-[0-9]*") if p.name.removeprefix("clang-").isdigit()}
    versioned = sorted(names, key=lambda name: int(name.removeprefix("clang-")), reverse=True)
    return versioned[0] if versioned else "clang"


@pytest.mark.parametrize("compiler", ["gcc", newest_clang()])
def test_the_c_kernel_built_by_each_compiler_counts_non_finite_values(compiler, tmp_path, monkeypatch):
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed here (.ci/run installs clang from the distribution's packages)")
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
                            "--build-temp", str(tmp_path / "tmp")], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "CC": compiler, "LDSHARED": f"{compiler} -shared"}, timeout=300)
    assert build.returncode == 0, build.stderr
    monkeypatch.setattr(c_backend, "_cstats", _load(tmp_path, "_cstats"))
    monkeypatch.setattr(merge, "_cmerge", _load(tmp_path, "_cmerge"))
    monkeypatch.setattr(histogram, "_chist", _load(tmp_path, "_chist"))
    for label, x, unit_dim in _cases():
        # the C merge of this compiler, against the torch merge, on the same packed partials
        arena = Arena(torch.device("cpu"))
        partial = MomentKernel(0.05, use_c=True, use_triton=False)(x, unit_dim, arena)
        layout = merge.Layout.build([(0, partial)], 1, torch.device("cpu"))
        merged = np.empty((1, 1, 8))
        merge.merge_into(layout, arena.row()[None], 1e-6, merged)
        want = merge.merge_rows(layout, arena.row()[None], 1e-6).numpy()
        np.testing.assert_allclose(merged, want, rtol=1e-12, err_msg=f"{compiler}, {label}: the C merge")
        counts = histogram.Histograms(torch.device("cpu"))
        counts.add(0, x * 1e-3)
        np.testing.assert_array_equal(counts.take(1)[0].numpy(), np.histogram(
            (x * 1e-3).double().numpy(), np.array(HIST_EDGES))[0], err_msg=f"{compiler}, {label}: the C histogram")
        got = tensor_statistics(x, unit_dim=unit_dim, implementation="c")
        try:
            assert_statistics_close(got, reference_statistics(x, unit_dim))
        except AssertionError as exc:
            raise AssertionError(f"{compiler}, {label}: {exc}") from None
