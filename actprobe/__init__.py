"""actprobe: per-layer activation statistics of PyTorch models, streamed to HDF5.

    with actprobe.Probe(model, "run.h5") as probe:
        ...
        probe.step(loss=loss)
    run = actprobe.read("run.h5")
    print(actprobe.summary("run.h5"))      # what ``actprobe show`` prints
    figures = actprobe.plot("run.h5")      # what ``actprobe plot`` draws, as matplotlib figures

``import actprobe`` is light: ``Probe`` (and with it torch) and ``read`` (and h5py) load on first use.
The layers, from the bottom: ``runfile`` (the HDF5 contract), ``stats`` (kernels), ``engine`` (hooks
and ``Probe``), ``training`` (the one loop), ``analysis``, ``render``, ``recipes``, ``cli``; see
docs/ARCHITECTURE.md. Import paths of actprobe 0.1's flat modules still work (``_compat``).
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
from ._compat import install_moved_modules
from .runfile.format import STATISTICS

if TYPE_CHECKING:
    from .engine.probe import Probe
    from .render.plots import plot
    from .render.summary import summary
    from .runfile.reader import Run, read

_LAZY = {"Probe": ".engine.probe", "Run": ".runfile.reader", "read": ".runfile.reader",
         "summary": ".render.summary", "plot": ".render.plots"}
install_moved_modules()

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
    "plot",
    "read",
    "summary",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'actprobe' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
