"""Quick start of the Python API: the WIB-ReLU paper's CNN trained on Fashion-MNIST with a probe attached.

    python examples/quickstart.py [--steps 300] [--out quickstart.h5] [--data-root DIR]

The same run as `actprobe run probes/paper_cnn.py`, written as your own training loop would be.
Fashion-MNIST comes from --data-root, $ACTPROBE_DATA, a torchvision download or, offline, the
sample packaged with actprobe; inputs are standardised to mean 0 and std 1, as in the paper.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console

import actprobe
from actprobe import datasets
from actprobe.models import paper_cnn
from actprobe.summary import summarize
from actprobe.terminal import render_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default="quickstart.h5")
    parser.add_argument("--data-root")
    args = parser.parse_args()

    torch.manual_seed(0)
    loader = datasets.loader("fashion-mnist", batch_size=args.batch, root=args.data_root)
    model = paper_cnn()  # PyTorch's default init: the one the paper diagnoses
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    meta = {"example": "quickstart", "data_source": loader.source}
    with actprobe.Probe(model, args.out, overwrite=True, meta=meta) as probe:
        step = 0
        while step < args.steps:
            for inputs, targets in loader:
                loss = torch.nn.functional.cross_entropy(model(inputs), targets)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                probe.step(loss=loss)  # a tensor: recorded without a host sync
                step += 1
                if step == args.steps:
                    break

    render_summary(summarize(actprobe.read(args.out)), Console())


if __name__ == "__main__":
    main()
