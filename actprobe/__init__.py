"""actprobe: per-layer activation statistics of PyTorch models, streamed to HDF5.

    with actprobe.Probe(model, "run.h5") as probe:
        ...
        probe.step(loss=loss)
    run = actprobe.read("run.h5")

``import actprobe`` is light: ``Probe`` (and with it torch) and ``read`` (and h5py) load on first use.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ActprobeError,
    ActprobeWarning,
    DataError,
    FormatError,
    ModelFileError,
    OptionError,
    RunFileError,
    SelectionError,
)
from .format import STATISTICS

if TYPE_CHECKING:
    from .probe import Probe
    from .reader import Run, read

_LAZY = {"Probe": ".probe", "Run": ".reader", "read": ".reader"}

__all__ = [
    "STATISTICS",
    "ActprobeError",
    "ActprobeWarning",
    "DataError",
    "FormatError",
    "ModelFileError",
    "OptionError",
    "Probe",
    "Run",
    "RunFileError",
    "SelectionError",
    "__version__",
    "read",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'actprobe' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
