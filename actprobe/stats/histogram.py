"""Fixed-bin histograms of activations and gradients, computed on the tensor's device in one pass
(``torch.bucketize`` and ``index_add_``: no host–device synchronisation); on the CPU by the C
extension ``_chist`` in one pass, with the same bins and the same counts.

The bins are part of the file format (``runfile.format.HIST_EDGES``, ``hist/edges``, docs/FORMAT.md): symmetric and log-spaced in
|x|, four per decade from 1e-6 to 1e6, a bin [−1e-6, 1e-6) around zero, and an underflow and an
overflow bin (−inf … −1e6 and 1e6 … +inf), so that a collapsed layer (std 1e-3) and an exploding one
(std 1e3) both spread over a dozen bins. A value falls in bin i when edges[i] <= x < edges[i+1], the
last bin closed, as ``numpy.histogram`` counts with the same edges; ±Inf fall in the outer bins and
NaN in none. Values are compared in float64 (a float32 value at an edge lands where NumPy puts it).
"""

from __future__ import annotations

import numpy as np
import torch

from ..runfile.format import HIST_EDGES

try:
    from . import _chist
except ImportError:  # built without a C compiler: torch operations count on the CPU too
    _chist = None

_INNER = np.ascontiguousarray(HIST_EDGES[1:-1], dtype=np.float64)

BINS = len(HIST_EDGES) - 1
CHUNK = 1 << 20  # values bucketed at a time: the int64 indices and float64 copy stay a few MiB


class Histograms:
    """The histograms of one step: a (columns, BINS) float64 buffer on the device, added into per call."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._inner = torch.tensor(HIST_EDGES[1:-1], dtype=torch.float64).to(device, non_blocking=True)
        self.counts = torch.zeros((0, BINS), dtype=torch.float64, device=device)

    def add(self, column: int, x: torch.Tensor) -> None:
        """Count the values of ``x`` into column ``column`` (merged with earlier calls of the step)."""
        if column >= self.counts.shape[0]:
            grown = torch.zeros((max(2 * self.counts.shape[0], column + 1), BINS), dtype=torch.float64,
                                device=self.device)
            grown[:self.counts.shape[0]] = self.counts
            self.counts = grown
        row = self.counts[column]
        flat = x.detach().reshape(-1)
        if _chist is not None and flat.device.type == "cpu" and self.device.type == "cpu":
            # one pass in C (~3 ns a value); half precision converted to float32 first, exactly
            flat = flat.contiguous() if flat.dtype in (torch.float32, torch.float64) else flat.float()
            _chist.hist(flat.data_ptr(), flat.numel(), flat.dtype == torch.float64, _INNER.ctypes.data, len(_INNER),
                        row.data_ptr())
            return
        for start in range(0, flat.numel(), CHUNK):
            part = flat[start:start + CHUNK].to(device=self.device, dtype=torch.float64)
            row.index_add_(0, torch.bucketize(part, self._inner, right=True), (~part.isnan()).to(torch.float64))

    def take(self, columns: int) -> torch.Tensor:
        """The step's (columns, BINS) counts (zeros where nothing was counted); the buffer starts afresh."""
        out = torch.zeros((columns, BINS), dtype=torch.float64, device=self.device)
        n = min(columns, self.counts.shape[0])
        out[:n] = self.counts[:n]
        self.counts.zero_()
        return out
