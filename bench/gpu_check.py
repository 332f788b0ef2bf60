"""One prepared GPU check for a session that has a CUDA device (CI never has one).

1. Correctness: the Triton kernel (what CUDA tensors use) and the torch kernel on the GPU against
   the float64 reference: shapes of every layout, float32/bfloat16/float16/float64, channels-last,
   a mean 10,000 times the std, NaN and ±Inf, a dead unit.
2. No host–device synchronisation: probed training steps of each workload (150 of the paper's CNN,
   30 of ResNet-50 and of the transformer) under torch.cuda.set_sync_debug_mode("error"); and 50 of
   the paper's CNN with gradient and parameter statistics and histograms (grads=True, params=True,
   hist_every=5: tensor hooks in the autograd engine's device thread, the optimizer's step hooks,
   bucketize/index_add_ on the device), every value finite, every finite value in a histogram bin; and the
   paper's CNN recorded through the swapped ``nn.Module._call_impl`` (engine/dispatch.py) and through hooks, the
   same file bit for bit.
3. Distributed runs: two ranks of the paper's CNN recorded on the device in one process (torchrun's
   RANK/WORLD_SIZE, no process group: the partials are merged on the device and staged with the rows)
   under set_sync_debug_mode("error"), merged when read, against the float64 reference of both ranks'
   outputs; with two GPUs or more, bench/distributed.py with NCCL (else said to be unmeasured).
4. Timing: bench/overhead.py on the GPU for the three workloads (the reference harness's
   selection, and actprobe's default selection for the paper's CNN).

    python bench/gpu_check.py          # prints PASS lines (or fails loudly) and the overhead tables
    python bench/gpu_check.py --cpu    # checks 1–2 on the CPU with the torch kernel: the script runs
    python bench/gpu_check.py --quick  # fewer timing rounds
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import actprobe  # noqa: E402
from actprobe.stats.reference import mismatches, reference_statistics  # noqa: E402
from actprobe.stats.single import tensor_statistics  # noqa: E402
from workloads import has_parameters_leaf, make  # noqa: E402


def cases(gen: torch.Generator):
    for shape, unit_dim in [((256, 8, 14, 14), 1), ((128, 64), -1), ((4, 9, 32), -1), ((4, 9, 32), 1),
                            ((5000,), None), ((16, 512, 1024), -1), ((8, 2048, 7, 7), 1)]:
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            yield f"{tuple(shape)} {dtype}", (torch.randn(shape, generator=gen) * 1.7 + 0.3).to(dtype), unit_dim
    yield "channels-last bf16", torch.randn(32, 64, 28, 28, generator=gen).to(
        torch.bfloat16).contiguous(memory_format=torch.channels_last), 1
    large = torch.randn(256, 16, 8, 8, generator=gen) + 1e4
    yield "mean 1e4 x std", large, 1
    outlier = torch.randn(256, 16, 8, 8, generator=gen)
    outlier[0, :, 0, 0] = 1000.0  # every unit starts with a 1000-sigma outlier
    yield "outlier first", outlier, 1
    broken = large.clone()
    broken[0, 0, 0, 0], broken[3, 2, 1, 1], broken[:, 5] = float("nan"), float("inf"), float("nan")
    yield "NaN/Inf", broken, 1
    dead = torch.randn(64, 6, 5, 5, generator=gen)
    dead[:, 2] = 3.0
    yield "dead unit", dead, 1


def check_statistics(device: torch.device) -> None:
    implementations = ("auto", "torch-masked") if device.type == "cuda" else ("torch-masked",)
    count = 0
    for label, x, unit_dim in cases(torch.Generator().manual_seed(0)):
        want = reference_statistics(x, unit_dim)
        for implementation in implementations:
            got = tensor_statistics(x.to(device), unit_dim=unit_dim, implementation=implementation)
            wrong = mismatches(got, want)
            if wrong:
                raise AssertionError(f"{label}, {implementation}: {'; '.join(wrong)}")
            count += 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"PASS statistics: {count} tensors x implementations {implementations} on {name}")


def check_no_sync(device: torch.device) -> None:
    for name, steps, select in (("paper-cnn", 150, None), ("resnet50", 30, has_parameters_leaf),
                                ("transformer", 30, has_parameters_leaf)):
        if device.type != "cuda" and name != "paper-cnn":
            continue
        workload = make(name, device, None if device.type == "cuda" else 32)
        path = Path(tempfile.mkdtemp()) / f"{name}.h5"
        with actprobe.Probe(workload.model, path, select=select, flush_every=25) as probe:
            workload.run(3, probe)  # warm up: Triton compiles, cuDNN picks algorithms
            run_without_sync(device, workload, steps, probe)
        run = actprobe.read(path)
        assert run.rows == steps + 3 and probe.error is None, probe.error
        where = "under set_sync_debug_mode('error'): no host-device synchronisation" if device.type == "cuda" \
            else "on the CPU (the synchronisation check needs CUDA)"
        print(f"PASS {name}: {steps} probed steps, {len(run.sites)} sites, {where}")


def run_without_sync(device: torch.device, workload, steps: int, probe) -> None:
    """``steps`` probed training steps, under set_sync_debug_mode("error") on a CUDA device."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        workload.run(steps, probe)
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")


def check_direct_calls(device: torch.device) -> None:
    """The modules' calls recorded through the swapped ``nn.Module._call_impl`` (engine/dispatch.py) write the same
    file, bit for bit, as through PyTorch's hooks, on this device, under set_sync_debug_mode("error")."""
    from actprobe.engine import dispatch, hooks

    if dispatch.DISPATCH is None:
        print("NOTE direct calls: this build has none (no C extension): the hooks' path alone was checked")
        return
    files = {}
    for path in ("direct", "hooks"):
        saved = hooks.DISPATCH
        hooks.DISPATCH = dispatch.DISPATCH if path == "direct" else None
        try:
            torch.manual_seed(0)
            workload = make("paper-cnn", device, None if device.type == "cuda" else 32)
            files[path] = Path(tempfile.mkdtemp()) / f"{path}.h5"
            with actprobe.Probe(workload.model, files[path], flush_every=25, every=2) as probe:
                run_without_sync(device, workload, 20, probe)
            assert probe.error is None, probe.error
        finally:
            hooks.DISPATCH = saved
    a, b = actprobe.read(files["direct"]), actprobe.read(files["hooks"])
    assert a.rows == b.rows == 10 and a.sites == b.sites
    for name in a.stats:
        assert np.array_equal(np.asarray(a.stats[name]), np.asarray(b.stats[name]), equal_nan=True), name
    print(f"PASS direct calls: {a.rows} rows x {len(a.sites)} sites, the same bit for bit as through hooks")


def check_grads_and_params(device: torch.device) -> None:
    workload = make("paper-cnn", device, None if device.type == "cuda" else 32)
    path = Path(tempfile.mkdtemp()) / "grads.h5"
    with actprobe.Probe(workload.model, path, flush_every=25, grads=True, params=True, hist_every=5,
                        optimizer=workload.train_step.optimizer) as probe:
        workload.run(3, probe)
        run_without_sync(device, workload, 50, probe)
    run = actprobe.read(path)
    assert run.rows == 53 and probe.error is None, probe.error
    grad_std = torch.tensor(run.grad_stats["std"][-1])
    assert torch.isfinite(grad_std[1:]).all() and torch.isfinite(torch.tensor(run.update_ratio()[-1])).all()
    counts = run.hist.counts("counts", -1)
    row = int(np.flatnonzero(run.step == run.hist.step[-1])[0])  # the histogram row's statistics row
    assert len(run.hist.step) == 11 and counts.sum() == float(np.asarray(run.stats["count"][row]).sum())
    print(f"PASS paper-cnn with grads, params and histograms: 50 probed steps, {len(run.params)} parameters, "
          f"finite gradients and update ratios, {len(run.hist.step)} histogram rows"
          + (", no host-device synchronisation" if device.type == "cuda" else ""))


def check_distributed(device: torch.device) -> None:
    import os

    folder = Path(tempfile.mkdtemp()) / "ddp"
    outputs: list[dict[tuple[int, str], torch.Tensor]] = []
    os.environ["WORLD_SIZE"] = "2"
    try:
        for rank in range(2):
            os.environ["RANK"] = str(rank)
            torch.manual_seed(0)
            model = actprobe.models.paper_cnn().to(device)
            seen: dict[tuple[int, str], torch.Tensor] = {}
            now = [0]
            for name, module in model.named_modules():
                if name and next(module.children(), None) is None:
                    module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__((now[0], name), o.detach().clone()))
            gen = torch.Generator().manual_seed(rank)
            batches = [torch.randn(64, 1, 28, 28, generator=gen).to(device) * (1 + rank) for _ in range(6)]
            with actprobe.Probe(model, folder, grads=True, flush_every=3) as probe:
                for step, x in enumerate(batches):
                    now[0] = step
                    if step == 2 and device.type == "cuda":
                        torch.cuda.synchronize()
                        torch.cuda.set_sync_debug_mode("error")
                    try:
                        model(x).logsumexp(1).mean().backward()
                        probe.step()
                    finally:
                        if device.type == "cuda":
                            torch.cuda.set_sync_debug_mode("default")
            assert probe.error is None, probe.error
            outputs.append(seen)
    finally:
        os.environ.pop("RANK", None)
        os.environ.pop("WORLD_SIZE", None)
    run = actprobe.read(folder)
    assert run.distributed and run.rows == 6, (run.rows, run.notes)
    units = {1: 1, -1: -1, 0: None}
    for row in range(run.rows):
        for column, site in enumerate(run.sites):
            joined = torch.cat([seen[(row, site)] for seen in outputs])
            want = reference_statistics(joined, units[int(run.site_unit_dims[column])])
            got = {name: float(run.stats[name][row, column]) for name in actprobe.STATISTICS}
            wrong = mismatches(got, want, 1e-4)
            assert not wrong, (row, site, wrong)
    print(f"PASS distributed run of 2 ranks on {device.type}: {run.rows} rows × {len(run.sites)} sites merged from the "
          "ranks' partials equal the float64 reference of both ranks' outputs"
          + (", no host-device synchronisation" if device.type == "cuda" else ""))
    if device.type == "cuda":
        if torch.cuda.device_count() >= 2:
            subprocess.run([sys.executable, str(HERE / "distributed.py"), "--device", "cuda", "--nproc", "2",
                            "--rounds", "10"], check=True)
        else:
            print("NOTE one GPU: the NCCL job of 2 processes (bench/distributed.py --device cuda) is unmeasured")


def main() -> None:
    if "--cpu" in sys.argv[1:]:
        check_statistics(torch.device("cpu"))
        check_no_sync(torch.device("cpu"))
        check_direct_calls(torch.device("cpu"))
        check_grads_and_params(torch.device("cpu"))
        check_distributed(torch.device("cpu"))
        return
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device")
    device = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}")
    check_statistics(device)
    check_no_sync(device)
    check_direct_calls(device)
    check_grads_and_params(device)
    check_distributed(device)
    rounds = "8" if "--quick" in sys.argv[1:] else "20"
    overhead = [sys.executable, str(HERE / "overhead.py"), "--device", "cuda", "--rounds", rounds]
    subprocess.run(overhead + ["--model", "all", "--select", "params", "--torch-kernel"], check=True)
    subprocess.run(overhead + ["--model", "paper-cnn", "--select", "leaves", "--extras"], check=True)


if __name__ == "__main__":
    main()
