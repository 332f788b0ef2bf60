"""The HDF5 run file, format version 1: writing it (see docs/FORMAT.md for the contract).

Rows are committed in two phases so that a crash at any moment leaves a consistent file: every
dataset except ``step`` is extended and written, the file is flushed, then ``step`` is extended
and the file flushed again. The number of committed rows is ``len(step)``; readers ignore anything
past it.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from .format import FORMAT_NAME, FORMAT_VERSION, STATISTICS, Site
from .lock import WriterLock


def _fixed_utf8(values: Sequence[str]) -> np.ndarray:
    encoded = [v.encode("utf-8") for v in values]
    length = max([len(e) for e in encoded] + [1])
    dtype = h5py.string_dtype("utf-8", length=length)
    return np.array(encoded, dtype=dtype)


class RunFileWriter:
    """Creates a run file and appends rows to it in SWMR mode."""

    def __init__(self, path: Path, *, sites: Sequence[Site], scalar_names: Sequence[str],
                 attributes: Mapping[str, Any], chunk_rows: int) -> None:
        self.path = path
        self.scalar_names = list(scalar_names)
        self.rows = 0
        self._file = h5py.File(path, "w", libver="latest")
        try:
            self._create(sites, attributes, max(1, chunk_rows))
            self._file.flush()
            self._file.swmr_mode = True
        except BaseException:
            self._file.close()
            raise

    def _create(self, sites: Sequence[Site], attributes: Mapping[str, Any], chunk_rows: int) -> None:
        f = self._file
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["actprobe_version"] = __version__
        f.attrs["torch_version"] = _torch_version()
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")
        for key, value in attributes.items():
            f.attrs[key] = value
        f.create_dataset("sites", data=_fixed_utf8([s.name for s in sites]))
        f.create_dataset("site_module_type", data=_fixed_utf8([s.module_type for s in sites]))
        f.create_dataset("site_unit_dim", data=np.array(
            [0 if s.unit_dim is None else s.unit_dim for s in sites], dtype=np.int8))
        n_sites = len(sites)
        f.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(chunk_rows,))
        f.create_dataset("time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(chunk_rows,),
                         fillvalue=np.nan)
        stats = f.create_group("stats")
        for name in STATISTICS:
            stats.create_dataset(name, shape=(0, n_sites), maxshape=(None, n_sites), dtype=np.float32,
                                 chunks=(chunk_rows, max(1, n_sites)), fillvalue=np.nan)
        scalars = f.create_group("scalars")
        for name in self.scalar_names:
            scalars.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.float64,
                                   chunks=(chunk_rows,), fillvalue=np.nan)

    def append(self, steps: np.ndarray, times: np.ndarray, stats: np.ndarray, scalars: np.ndarray) -> None:
        """Commit rows. stats: (n, S, len(STATISTICS)) float; scalars: (n, len(scalar_names))."""
        n = len(steps)
        if n == 0:
            return
        start, end = self.rows, self.rows + n
        f = self._file
        _extend(f["time"], start, end, times)
        for index, name in enumerate(STATISTICS):
            _extend(f["stats"][name], start, end, stats[:, :, index].astype(np.float32))
        for index, name in enumerate(self.scalar_names):
            _extend(f["scalars"][name], start, end, scalars[:, index])
        f.flush()
        _extend(f["step"], start, end, steps)
        f.flush()
        self.rows = end

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()


def _extend(dataset: h5py.Dataset, start: int, end: int, values: np.ndarray) -> None:
    if dataset.shape[0] < end:
        dataset.resize(end, axis=0)
    dataset[start:end] = values


def _torch_version() -> str:
    import torch  # loaded already by whoever records; imported here, not at the top, to keep readers light

    return str(torch.__version__)


EPOCH_INTEGER_FIELDS = ("epoch", "steps")


def finish_run(path: Path, epochs: Mapping[str, Sequence[float]], attributes: Mapping[str, Any]) -> None:
    """Complete a closed run file: add the ``epochs/`` group (one dataset per field, int64 for
    ``epoch`` and ``steps``, float64 otherwise) and root ``attributes`` (``complete``, ``seconds``…).

    Takes the writer lock, so it fails with ``RunFileError`` while a probe still writes the file.
    """
    lock = WriterLock(path)
    try:
        with h5py.File(path, "r+") as f:
            group = f.require_group("epochs")
            for name, values in epochs.items():
                dtype = np.int64 if name in EPOCH_INTEGER_FIELDS else np.float64
                group.create_dataset(name, data=np.asarray(values, dtype=dtype))
            for key, value in attributes.items():
                f.attrs[key] = value
    finally:
        lock.release()
