"""Reading a run file into NumPy arrays: ``read(path) -> Run``. Works on files still being written."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from .format import FORMAT_NAME, FORMAT_VERSION, STATISTICS


@dataclass(frozen=True)
class Run:
    """The contents of a run file. Arrays have T rows (recorded steps) and S columns (sites)."""

    path: Path
    attrs: dict[str, Any]
    sites: list[str]
    site_module_types: list[str]
    site_unit_dims: np.ndarray  # (S,) int8: 1, -1, or 0 for no units
    step: np.ndarray  # (T,) int64
    time: np.ndarray  # (T,) float64, seconds since the probe started
    stats: dict[str, np.ndarray] = field(repr=False)  # name -> (T, S) float32
    scalars: dict[str, np.ndarray] = field(repr=False)  # name -> (T,) float64
    epochs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # recipe files: name -> (E,)

    @property
    def rows(self) -> int:
        return len(self.step)

    @property
    def format_version(self) -> int:
        return int(self.attrs["format_version"])

    def site_index(self, site: str) -> int:
        try:
            return self.sites.index(site)
        except ValueError:
            raise FormatError(f"{self.path} has no site {site!r}; its sites are: {', '.join(self.sites)}") from None

    def stat(self, name: str, site: str | None = None) -> np.ndarray:
        """One statistic: (T, S), or (T,) for one site."""
        if name not in self.stats:
            raise FormatError(f"unknown statistic {name!r}; available: {', '.join(self.stats)}")
        values = self.stats[name]
        return values if site is None else values[:, self.site_index(site)]


def read(path: str | os.PathLike[str]) -> Run:
    """Read a run file: every committed row, also while another process is still writing it.

    Raises:
        FormatError: the file is missing, not HDF5, truncated, not an actprobe file, or of a newer
            format version than this actprobe reads.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if path.is_dir():
        raise FormatError(f"{path} is a folder, not a run file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc})") from None
    if not is_hdf5:
        raise FormatError(f"{path} is not an HDF5 file")
    try:
        with _open(h5py, path) as f:
            return _load(f, path)
    except FormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise FormatError(f"{path} is damaged or incomplete: {exc}") from None


def _open(h5py: Any, path: Path) -> Any:
    # A finished file opens plainly, and damage shows as a quick error. A file that is still being
    # written, or whose writer died, carries HDF5's open-for-write mark: only SWMR mode opens it.
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise
    return h5py.File(path, "r", libver="latest", swmr=True)


def _load(f: Any, path: Path) -> Run:
    attrs = {key: _plain(value) for key, value in f.attrs.items()}
    if attrs.get("format") != FORMAT_NAME:
        raise FormatError(f"{path} is an HDF5 file but not an actprobe run file (no format='actprobe' attribute)")
    version = attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or version < 1:
        raise FormatError(f"{path} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise FormatError(f"{path} has format_version {version}; this actprobe reads up to "
                          f"{FORMAT_VERSION}: upgrade actprobe")
    if "step" not in f:
        raise FormatError(f"{path} has no rows yet (the writer has not committed its first flush)")
    step_ds = f["step"]
    step_ds.refresh()
    rows = step_ds.shape[0]
    stats = {}
    for name in STATISTICS:
        dataset = f["stats"][name]
        dataset.refresh()
        stats[name] = dataset[:rows]
    scalars = {}
    for name, dataset in f["scalars"].items():
        dataset.refresh()
        scalars[name] = dataset[:rows]
    time_ds = f["time"]
    time_ds.refresh()
    epochs = {name: dataset[()] for name, dataset in f["epochs"].items()} if "epochs" in f else {}
    return Run(
        path=path,
        attrs=attrs,
        sites=[_text(v) for v in f["sites"][()]],
        site_module_types=[_text(v) for v in f["site_module_type"][()]],
        site_unit_dims=f["site_unit_dim"][()] if "site_unit_dim" in f else np.zeros(0, np.int8),
        step=step_ds[:rows],
        time=time_ds[:rows],
        stats=stats,
        scalars=scalars,
        epochs=epochs,
    )


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value
