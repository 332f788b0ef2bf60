"""A training process for the crash tests: records with a Probe and reports what it committed.

Usage: python _writer_process.py PATH [hold]
Prints "ready", then for every committed flush "committed ROWS LOSS_OF_LAST_ROW". With "hold", it
prints "holding" after its first flush and waits to be killed while still holding the file.
"""

import sys
import time

import torch
from torch import nn

import actprobe

path = sys.argv[1]
hold = len(sys.argv) > 2 and sys.argv[2] == "hold"
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
print("ready", flush=True)
with actprobe.Probe(model, path, flush_every=1000, flush_seconds=float("inf")) as probe:
    for step in range(1_000_000):
        loss = model(torch.randn(8, 16)).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        probe.step(loss=loss)
        if step % 3 == 2:
            probe.flush(wait=True)
            print(f"committed {probe.rows_written} {loss.item()!r}", flush=True)
            if hold:
                print("holding", flush=True)
                time.sleep(3600)
