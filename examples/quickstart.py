"""Quick start: train the WIB-ReLU paper's reference CNN on Fashion-MNIST with actprobe attached.

    python examples/quickstart.py [--steps 300] [--out quickstart.h5] [--data-root DIR]

Fashion-MNIST is read from --data-root or $ACTPROBE_DATA (a folder holding the four original IDX
files, .gz or not, directly or in fashion-mnist/ or FashionMNIST/raw/), else downloaded with
torchvision into ~/.cache/actprobe. Inputs are standardised to mean 0 and std 1, as in the paper.
The model uses PyTorch's default initialisation, the one the paper diagnoses; the summary shows the
activation std shrinking layer after layer.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import actprobe
from actprobe.models import paper_cnn

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find_idx(root: Path) -> Path | None:
    for folder in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw"):
        if all((folder / name).exists() or (folder / f"{name}.gz").exists() for name in IDX_FILES):
            return folder
    return None


def load_fashion_mnist(data_root: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    roots = [Path(p) for p in (data_root, os.environ.get("ACTPROBE_DATA")) if p]
    cache = Path.home() / ".cache" / "actprobe"
    for root in roots + [cache]:
        folder = find_idx(root)
        if folder is not None:
            files = [folder / n if (folder / n).exists() else folder / f"{n}.gz" for n in IDX_FILES]
            return (torch.from_numpy(read_idx(files[0]).copy()), torch.from_numpy(read_idx(files[1]).copy()),
                    f"Fashion-MNIST training set, 60,000 images, from {folder}")
    try:
        from torchvision.datasets import FashionMNIST

        data = FashionMNIST(cache, train=True, download=True)
        return data.data, data.targets, f"Fashion-MNIST training set, downloaded to {cache}"
    except Exception as exc:  # no network, or the download failed
        looked = ", ".join(str(r) for r in roots + [cache])
        sys.exit(f"error: Fashion-MNIST not found (looked in {looked}) and the download failed: {exc}. "
                 "Pass --data-root or set ACTPROBE_DATA to a folder with the IDX files.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default="quickstart.h5")
    parser.add_argument("--data-root")
    args = parser.parse_args()
    console = Console()

    images, labels, source = load_fashion_mnist(args.data_root)
    x_all = images.float().unsqueeze(1) / 255.0
    x_all = (x_all - x_all.mean()) / x_all.std()  # standardised: mean 0, std 1
    console.print(f"data: {source}")

    torch.manual_seed(0)
    model = paper_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with actprobe.Probe(model, args.out, overwrite=True, meta={"example": "quickstart", "data": "fashion-mnist"}) as probe:
        for step in range(args.steps):
            index = torch.randint(0, len(x_all), (args.batch,), generator=gen)
            loss = nn.functional.cross_entropy(model(x_all[index]), labels[index])
            loss.backward()
            opt.step()
            opt.zero_grad()
            probe.step(loss=loss)  # a tensor: recorded without a host sync
    elapsed = time.perf_counter() - start

    run = actprobe.read(args.out)
    table = Table(title=f"{args.out}: {run.rows} steps, {len(run.sites)} sites, {elapsed:.1f} s")
    for column in ("site", "module", "std step 0", f"std step {run.step[-1]}",
                   "near-zero step 0", f"near-zero step {run.step[-1]}", "dead last"):
        table.add_column(column, justify="left" if column in ("site", "module") else "right")
    for s, (name, kind) in enumerate(zip(run.sites, run.site_module_types)):
        table.add_row(name, kind, f"{run.stats['std'][0, s]:.3f}", f"{run.stats['std'][-1, s]:.3f}",
                      f"{run.stats['near_zero'][0, s]:.0%}", f"{run.stats['near_zero'][-1, s]:.0%}",
                      f"{run.stats['dead'][-1, s]:.0%}")
    console.print(table)
    console.print(f"loss: {run.scalars['loss'][0]:.3f} at step 0, {run.scalars['loss'][-1]:.3f} at step "
                  f"{run.step[-1]}")


if __name__ == "__main__":
    main()
