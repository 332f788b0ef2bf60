"""Child process of test_faults.py: training runs with a probe whose run file fails to write.

    python _faulty_writer.py DIR inject       # one run per fault point, then one without a fault
    python _faulty_writer.py DIR fsize N      # RLIMIT_FSIZE = N bytes, SIGXFSZ ignored: real EFBIG

``inject``: run K raises OSError(ENOSPC) at the K-th HDF5 write or flush of the writer, counted from
the file's creation (the creation's flush is 0; then each commit cycle writes time, the 8
statistics and 2 scalars, flushes, writes step, flushes); the last run has no fault. Each run's file
is DIR/k<K>.h5 (DIR/reference.h5 for the last). Prints one JSON line per run: K, the losses (hex),
rows_written, the ActprobeWarnings' messages. The process must exit with code 0.
"""

from __future__ import annotations

import errno
import json
import resource
import signal
import sys
import warnings
from pathlib import Path

import h5py
import torch
from torch import nn

import actprobe
from actprobe.runfile import storage, writer

# one commit per flush, whatever the timing: the fault points of each commit cycle are then fixed
# (grouping batches that queued up changes how many rows a commit holds, not the calls it makes)
writer.MAX_GROUP = 1
writer.MIN_COMMIT_SECONDS = 0.0

STEPS, FLUSH_EVERY = 40, 10
# a commit: time, row_nonfinite, 8 statistics, 2 scalars, a flush, step, a flush
OPS_PER_CYCLE = 1 + 1 + 8 + 2 + 1 + 1 + 1
TOTAL_OPS = 1 + OPS_PER_CYCLE * (STEPS // FLUSH_EVERY)


class Faults:
    """Counts the writer's HDF5 writes and flushes; the one numbered ``fail_at`` raises ENOSPC."""

    def __init__(self) -> None:
        self.count, self.fail_at = 0, -1

    def tick(self) -> None:
        index, self.count = self.count, self.count + 1
        if index == self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")


FAULTS = Faults()


def install() -> None:
    extend, flush = storage._extend, h5py.File.flush

    def faulty_extend(*args, **kwargs):
        FAULTS.tick()
        return extend(*args, **kwargs)

    def faulty_flush(self):
        FAULTS.tick()
        return flush(self)

    storage._extend = faulty_extend
    h5py.File.flush = faulty_flush


def train(path: Path) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with actprobe.Probe(model, path, flush_every=FLUSH_EVERY, overwrite=True) as probe:
            for _ in range(STEPS):
                x, y = torch.randn(16, 20, generator=generator), torch.randint(0, 10, (16,), generator=generator)
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                probe.step(loss=loss, lr=0.05)
                losses.append(float(loss))
    messages = [str(w.message) for w in caught if issubclass(w.category, actprobe.ActprobeWarning)]
    return {"losses": [x.hex() for x in losses], "rows_written": probe.rows_written, "warnings": messages}


def main() -> None:
    folder, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == "fsize":
        limit = int(sys.argv[3])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        print(json.dumps({"k": None, **train(folder / f"fsize{limit}.h5")}), flush=True)
        return
    install()
    for k in range(TOTAL_OPS + 1):
        FAULTS.count, FAULTS.fail_at = 0, (k if k < TOTAL_OPS else -1)
        name = f"k{k}.h5" if k < TOTAL_OPS else "reference.h5"
        result = train(folder / name)
        print(json.dumps({"k": k if k < TOTAL_OPS else None, "ops": FAULTS.count, **result}), flush=True)


if __name__ == "__main__":
    main()
