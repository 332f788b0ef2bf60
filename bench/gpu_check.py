"""One prepared GPU check for a session that has a CUDA device (CI never has one).

1. Correctness: the torch kernel on the GPU against the float64 reference (several shapes, dtypes,
   the large-mean case, non-finite values).
2. No host–device synchronisation: 150 probed training steps of the paper's CNN, flushes included,
   under torch.cuda.set_sync_debug_mode("error").
3. Timing: bench/overhead.py on the GPU.

    python bench/gpu_check.py          # prints PASS lines (or fails loudly) and the overhead table
    python bench/gpu_check.py --cpu    # the same checks on the CPU with the GPU's torch kernel,
                                       # without the sync check and the timing: proves the script runs
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
import actprobe  # noqa: E402
from actprobe.reduce import tensor_statistics  # noqa: E402
from conftest import assert_statistics_close, reference_statistics  # noqa: E402
from overhead import make_trainer  # noqa: E402


def check_statistics(device: torch.device) -> None:
    implementation = "auto" if device.type == "cuda" else "torch-masked"
    gen = torch.Generator().manual_seed(0)
    cases = [((256, 8, 14, 14), 1), ((128, 64), -1), ((4, 9, 32), -1), ((5000,), None)]
    for shape, unit_dim in cases:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            x = (torch.randn(shape, generator=gen) * 1.7 + 0.3).to(dtype)
            assert_statistics_close(tensor_statistics(x.to(device), unit_dim=unit_dim, implementation=implementation), reference_statistics(x, unit_dim))
    x = torch.randn(256, 16, 8, 8, generator=gen) + 1e4
    assert_statistics_close(tensor_statistics(x.to(device), unit_dim=1, implementation=implementation), reference_statistics(x, 1))
    x[0, 0, 0, 0] = float("nan")
    x[3, 2, 1, 1] = float("inf")
    assert_statistics_close(tensor_statistics(x.to(device), unit_dim=1, implementation=implementation), reference_statistics(x, 1))
    print("PASS statistics on", torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")


def check_no_sync(device: torch.device) -> None:
    model, train = make_trainer(device, 256)
    path = Path(tempfile.mkdtemp()) / "gpu.h5"
    with actprobe.Probe(model, path, flush_every=25) as probe:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(150):
                probe.step(loss=train())
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    run = actprobe.read(path)
    assert run.rows == 150 and probe.error is None, probe.error
    if device.type == "cuda":
        print("PASS 150 probed steps under set_sync_debug_mode('error'): no host-device synchronisation")
    else:
        print("PASS 150 probed steps on the CPU (the synchronisation check needs CUDA)")


def main() -> None:
    if "--cpu" in sys.argv[1:]:
        check_statistics(torch.device("cpu"))
        check_no_sync(torch.device("cpu"))
        return
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device")
    device = torch.device("cuda")
    check_statistics(device)
    check_no_sync(device)
    subprocess.run([sys.executable, str(HERE / "overhead.py"), "--device", "cuda", "--rounds", "10"], check=True)


if __name__ == "__main__":
    main()
