"""Opening a run file in SWMR mode with a bounded number of metadata read attempts.

A SWMR reader retries a metadata read whose checksum fails, in case the writer was rewriting it:
HDF5's default is 100 attempts with a growing sleep, which on a damaged file (truncated, or left
by a writer that died mid-flush) waits for minutes. h5py does not expose the setting
(``H5Pset_metadata_read_attempts``), so it is called through ctypes on the HDF5 library that h5py
has loaded; where that library cannot be found, the default applies.
"""

from __future__ import annotations

import ctypes
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import h5py

# 2**16 µs of backoff in all: enough for a live writer's flush, short on a damaged file
READ_ATTEMPTS = 16


@lru_cache(maxsize=1)
def _set_read_attempts() -> Any:
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            path = next((line.split()[-1] for line in maps
                         if re.search(r"/libhdf5[-.][^/]*\.so", line) and "hdf5_hl" not in line), None)
        if path is None:
            return None
        function = ctypes.CDLL(path).H5Pset_metadata_read_attempts
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def open_swmr(path: Path) -> h5py.File:
    """``path`` opened read-only in SWMR mode, with at most ``READ_ATTEMPTS`` tries per metadata read."""
    set_attempts = _set_read_attempts()
    if set_attempts is None:
        return h5py.File(path, "r", libver="latest", swmr=True)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    if set_attempts(fapl.id, READ_ATTEMPTS) < 0:
        return h5py.File(path, "r", libver="latest", swmr=True)
    file_id = h5py.h5f.open(str(path).encode(), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(file_id)
