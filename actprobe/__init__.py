"""actprobe: per-layer activation statistics of PyTorch models, streamed to HDF5.

    with actprobe.Probe(model, "run.h5") as probe:
        ...
        probe.step(loss=loss)
    run = actprobe.read("run.h5")
"""

from ._version import __version__
from .errors import ActprobeError, ActprobeWarning, FormatError, OptionError, RunFileError, SelectionError
from .probe import Probe
from .reader import Run, read
from .reduce import STATISTICS

__all__ = [
    "STATISTICS",
    "ActprobeError",
    "ActprobeWarning",
    "FormatError",
    "OptionError",
    "Probe",
    "Run",
    "RunFileError",
    "SelectionError",
    "__version__",
    "read",
]
