"""Run by tests/test_triton_kernel.py in a subprocess with TRITON_INTERPRET=1 (Triton's interpreter
must be chosen before the kernel is compiled): the Triton kernel on CPU tensors against the float64
NumPy reference and against the torch kernel, then a probed training run with the Triton kernel."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest
import actprobe  # noqa: E402
from actprobe.stats.single import tensor_statistics  # noqa: E402
from conftest import assert_statistics_close, paper_cnn, reference_statistics, train_steps  # noqa: E402

CASES = [((64, 8, 14, 14), 1), ((128, 64), -1), ((4, 9, 32), -1), ((4, 9, 32), 1), ((5000,), None),
         ((3, 5, 7, 2), None), ((2, 3), -1), ((1, 1), -1), ((3, 70, 1), 1)]


def kernel_against_references() -> None:
    gen = torch.Generator().manual_seed(0)
    for shape, unit_dim in CASES:
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            x = (torch.randn(shape, generator=gen) * 1.7 + 0.3).to(dtype)
            got = tensor_statistics(x, unit_dim=unit_dim, implementation="triton")
            assert_statistics_close(got, reference_statistics(x, unit_dim))
            assert_statistics_close(got, tensor_statistics(x, unit_dim=unit_dim, implementation="torch-masked"))
    x = torch.randn(32, 16, 8, 8, generator=gen) + 1e4  # mean 10,000 times the std
    assert_statistics_close(tensor_statistics(x, unit_dim=1, implementation="triton"), reference_statistics(x, 1))
    x[0, 0, 0, 0], x[3, 2, 1, 1], x[5, 2, 0, 0] = float("nan"), float("inf"), float("-inf")
    x[:, 7] = float("nan")  # a unit with no finite value
    assert_statistics_close(tensor_statistics(x, unit_dim=1, implementation="triton"), reference_statistics(x, 1))
    dead = torch.randn(64, 6, 5, 5, generator=gen)
    dead[:, 2] = 1e4  # a constant unit: dead
    assert_statistics_close(tensor_statistics(dead, unit_dim=1, implementation="triton"), reference_statistics(dead, 1))
    channels_last = torch.randn(16, 12, 5, 5, generator=gen).to(memory_format=torch.channels_last)
    assert_statistics_close(tensor_statistics(channels_last, unit_dim=1, implementation="triton"),
                            reference_statistics(channels_last, 1))
    strided = torch.randn(40, 30, generator=gen)[:, ::3]  # a non-contiguous view, read in place
    assert_statistics_close(tensor_statistics(strided, unit_dim=-1, implementation="triton"),
                            reference_statistics(strided, -1))
    boundary = torch.tensor([[0.05, -0.05, 0.0500001, 0.0, float("nan")]] * 4)
    assert_statistics_close(tensor_statistics(boundary, unit_dim=-1, implementation="triton"),
                            reference_statistics(boundary, -1))
    outlier = torch.randn(64, 8, 6, 6, generator=gen)
    outlier[0, :, 0, 0] = 1000.0  # every unit starts with a 1000-sigma outlier: the shift is far off
    for dtype in (torch.float32, torch.bfloat16):
        x = outlier.to(dtype)
        assert_statistics_close(tensor_statistics(x, unit_dim=1, implementation="triton"), reference_statistics(x, 1))
    print("PASS kernel", len(CASES) * 4 + 8, "cases")


def probed_training() -> None:
    from actprobe.stats import dispatch

    assert dispatch.TRITON_EVERYWHERE, "run with ACTPROBE_KERNEL=triton"
    torch.manual_seed(0)
    model = paper_cnn()
    captured: list[torch.Tensor] = []
    gradients: dict[int, torch.Tensor] = {}

    def keep(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        index = len(captured)
        captured.append(output.detach().clone())
        output.register_hook(lambda grad: gradients.__setitem__(index, grad.clone()))

    for child in model.children():
        child.register_forward_hook(keep)
    path = Path(tempfile.mkdtemp()) / "triton.h5"
    with actprobe.Probe(model, path, flush_every=3, grads=True) as probe:  # rows merged in rings of 3 steps
        train_steps(model, 7, probe=probe, batch=16)
    run = actprobe.read(path)
    assert run.rows == 7 and len(run.sites) == 11
    for step in range(7):
        for site in range(11):
            output = captured[step * 11 + site]
            unit = 1 if output.ndim == 4 else (-1 if output.ndim == 2 else None)
            got = {name: float(run.stats[name][step, site]) for name in run.stats}
            assert_statistics_close(got, reference_statistics(output, unit))
            got = {name: float(run.grad_stats[name][step, site]) for name in run.grad_stats}
            assert_statistics_close(got, reference_statistics(gradients[step * 11 + site], unit))
    print("PASS probed training, 7 steps x 11 sites, outputs and gradients")


if __name__ == "__main__":
    kernel_against_references() if sys.argv[1] == "kernel" else probed_training()
