"""Quick start of the Python API: the WIB-ReLU paper's CNN trained on Fashion-MNIST with a probe attached.

    python examples/quickstart.py [--steps 300] [--out quickstart.h5] [--data-root DIR]

The same run as `actprobe run probes/paper_cnn.py`, written with the library: a Probe attached to the
model, and actprobe's training loop (`actprobe.training`) driving the steps; your own loop works the
same way, with `probe.step(loss=loss)` after each optimizer step.
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
from actprobe.training import TrainStep, run_loop


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
        # each step: forward, cross-entropy, backward, optimizer step, then probe.step(loss=loss) with the
        # loss as a tensor (recorded without a host sync); the epochs go on until --steps steps
        run_loop(TrainStep(model, optimizer), lambda epoch: loader, probe=probe, steps=args.steps, epochs=None)

    Console().print(actprobe.summary(args.out))  # what `actprobe show` prints


if __name__ == "__main__":
    main()
