"""The HDF5 run file, format version 1: writing it (see docs/FORMAT.md for the contract).

Rows are committed in two phases so that a crash at any moment leaves a consistent file: every
dataset except ``step`` is extended and written, the file is flushed, then ``step`` is extended
and the file flushed again. The committed rows are ``step``'s, up to the first entry that is
``STEP_FILL`` (−1) or not larger than the one before (normally all of ``len(step)``); readers ignore
anything past them. A write error freezes the file in that state (``RunFileWriter``).
"""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..errors import RunFileError
from .format import (FORMAT_NAME, FORMAT_VERSION, HIST_EDGES, PARAM_GROUPS, PARTIAL_NAMES, PARTIALS, STATISTICS,
                     ROW_NONFINITE, STATS, STEP_FILL, UNIT_PARTIAL_NAMES, UNIT_PARTIALS, Site, SiteGraph, scalar_key, unit_total)
from .lock import WriterLock


def _fixed_utf8(values: Sequence[str]) -> np.ndarray:
    encoded = [v.encode("utf-8") for v in values]
    length = max([len(e) for e in encoded] + [1])
    dtype = h5py.string_dtype("utf-8", length=length)
    return np.array(encoded, dtype=dtype)


# Rows per chunk at least: a chunk per row (flush_every=1) makes every append extend an index of tens
# of thousands of chunks per dataset; a row written into a larger chunk is a change in HDF5's cache.
MIN_CHUNK_ROWS = 64
HIST_CHUNK_ROWS = 8  # histogram rows per chunk (a row is sites × bins values)
PARTIAL_CHUNK_BYTES = 1 << 20  # the most bytes of a chunk of partials (distributed runs)


class RunFileWriter:
    """Creates a run file and appends rows to it in SWMR mode.

    Every HDF5 call is checked: the first that fails (a full disk, a file-size limit, an I/O error)
    *freezes* the file — its descriptor is pointed at /dev/null, so that nothing more reaches the
    disk and HDF5 can still close cleanly — and raises ``RunFileError``. The file then holds what a
    crash at that moment would leave: every committed row, readable, and nothing half-written that
    a reader would take for a row (``step`` is filled with −1 until a row's commit writes it).
    """

    def __init__(self, path: Path, *, sites: Sequence[Site], scalar_names: Sequence[str],
                 attributes: Mapping[str, Any], chunk_rows: int, graph: SiteGraph | None = None,
                 stat_groups: Sequence[str] = (STATS,), params: Sequence[str] = (),
                 hist_groups: Sequence[str] = (), param_ndims: Sequence[int] = (),
                 unit_columns: np.ndarray | None = None, param_sharded: Sequence[bool] = ()) -> None:
        """``unit_columns``: keep each row's mergeable partials (``partials/``, ``unit_partials/``), with
        these unit columns (a rank of a distributed run); ``param_sharded``: then also which parameters
        are shards (``param_sharded``)."""
        self.param_sharded = list(param_sharded)
        self.path = path
        self.unit_columns = unit_columns
        self.chunk_rows = max(MIN_CHUNK_ROWS, chunk_rows)
        self.scalar_names = list(scalar_names)
        self.params = list(params)
        self.param_ndims = list(param_ndims)
        self.hist_groups = list(hist_groups)  # hist/<group> datasets: "counts", "grad_counts"
        self.hist_rows = 0
        self.sites = len(sites)
        # the groups of a row's columns, side by side, and how many columns each has
        self.stat_groups = [(group, len(self.params) if group in PARAM_GROUPS else len(sites)) for group in stat_groups]
        self.rows = 0
        self.frozen = False
        try:
            self._file = h5py.File(path, "w", libver="latest")
        except Exception as exc:
            raise RunFileError(f"cannot create {path}: {_reason(exc)}") from None
        self._columns: dict[str, h5py.Dataset | h5py.Group] = {}
        try:
            self._checked("creating it", lambda: self._create(sites, attributes, max(MIN_CHUNK_ROWS, chunk_rows),
                                                              graph))
        except RunFileError:
            path.unlink(missing_ok=True)  # half-made, without a row: nothing recorded is lost
            raise

    def _create(self, sites: Sequence[Site], attributes: Mapping[str, Any], chunk_rows: int,
                graph: SiteGraph | None) -> None:
        f = self._file
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["actprobe_version"] = __version__
        f.attrs["torch_version"] = _torch_version()
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")
        f.attrs["run_id"] = uuid.uuid4().hex
        for key, value in attributes.items():
            f.attrs[key] = value
        columns = self._columns  # every object is kept open: closing one writes, and must not fail unseen
        columns["sites"] = f.create_dataset("sites", data=_fixed_utf8([s.name for s in sites]))
        columns["site_module_type"] = f.create_dataset("site_module_type",
                                                       data=_fixed_utf8([s.module_type for s in sites]))
        columns["site_unit_dim"] = f.create_dataset("site_unit_dim", data=np.array(
            [0 if s.unit_dim is None else s.unit_dim for s in sites], dtype=np.int8))
        columns["step"] = f.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64,
                                           chunks=(chunk_rows,), fillvalue=STEP_FILL)
        columns[ROW_NONFINITE] = f.create_dataset(ROW_NONFINITE, shape=(0,), maxshape=(None,), dtype=np.uint8,
                                                  chunks=(max(chunk_rows, 1024),), fillvalue=0)
        columns["time"] = _column(f, "time", chunk_rows)
        if self.params:
            columns["params"] = f.create_dataset("params", data=_fixed_utf8(self.params))
            if self.param_ndims:
                columns["param_ndim"] = f.create_dataset("param_ndim", data=np.array(self.param_ndims, dtype=np.int8))
        for group, width in self.stat_groups:
            for name in STATISTICS:
                columns[f"{group}/{name}"] = f.create_dataset(
                    f"{group}/{name}", shape=(0, width), maxshape=(None, width), dtype=np.float32,
                    chunks=(chunk_rows, max(1, width)), fillvalue=np.nan)
            columns[group] = f[group]
        if graph is not None:
            edges = np.array(graph.edges, dtype=np.int32).reshape(-1, 2)
            columns["graph/edges"] = f.create_dataset("graph/edges", data=edges)
            columns["graph/uncalled"] = f.create_dataset("graph/uncalled", data=_fixed_utf8(graph.uncalled))
            columns["graph"] = f["graph"]
        columns["scalars"] = f.require_group("scalars")
        if self.hist_groups:
            columns["hist/edges"] = f.create_dataset("hist/edges", data=np.array(HIST_EDGES, dtype=np.float64))
            columns["hist/step"] = f.create_dataset("hist/step", shape=(0,), maxshape=(None,), dtype=np.int64,
                                                    chunks=(HIST_CHUNK_ROWS,), fillvalue=STEP_FILL)
            for group in self.hist_groups:
                shape = (len(sites), len(HIST_EDGES) - 1)
                columns[f"hist/{group}"] = f.create_dataset(
                    f"hist/{group}", shape=(0, *shape), maxshape=(None, *shape), dtype=np.float64,
                    chunks=(HIST_CHUNK_ROWS, *shape), fillvalue=np.nan)
            columns["hist"] = f["hist"]
        for name in self.scalar_names:
            columns[f"scalars/{name}"] = _scalar_column(f, name, chunk_rows)
        if self.unit_columns is not None:
            self._create_partials(chunk_rows)
        f.flush()
        f.swmr_mode = True

    def _create_partials(self, chunk_rows: int) -> None:
        f, columns, unit_columns = self._file, self._columns, self.unit_columns
        assert unit_columns is not None
        width = sum(count for _, count in self.stat_groups)
        units = unit_total(unit_columns)
        for group, names, size in ((PARTIALS, PARTIAL_NAMES, width), (UNIT_PARTIALS, UNIT_PARTIAL_NAMES, units)):
            # chunks of at most PARTIAL_CHUNK_BYTES: a wide model's rows are megabytes (a chunk of a flush's
            # rows each would be gigabytes, written whole however few rows reach it)
            rows = max(1, min(chunk_rows, PARTIAL_CHUNK_BYTES // (8 * max(1, size))))
            for name in names:
                columns[f"{group}/{name}"] = f.create_dataset(
                    f"{group}/{name}", shape=(0, size), maxshape=(None, size), dtype=np.float64,
                    chunks=(rows, max(1, size)), fillvalue=np.nan)
        columns[f"{UNIT_PARTIALS}/columns"] = f.create_dataset(f"{UNIT_PARTIALS}/columns", data=unit_columns)
        if self.params:
            columns["param_sharded"] = f.create_dataset(
                "param_sharded", data=np.array(self.param_sharded or [False] * len(self.params), dtype=np.int8))
        columns[PARTIALS], columns[UNIT_PARTIALS] = f[PARTIALS], f[UNIT_PARTIALS]

    def append(self, steps: np.ndarray, times: np.ndarray, stats: np.ndarray, scalars: np.ndarray,
               hist: Sequence[tuple[int, np.ndarray]] = (),
               partials: tuple[np.ndarray, np.ndarray] | None = None, scalar_names: Sequence[str] | None = None) -> None:
        """Commit rows. stats: (n, C, len(STATISTICS)) float, the stat groups' columns side by side
        (S for the sites' groups, P for the parameters'); scalars: (n, len(scalar_names)); hist: the
        histogram rows among them, (row, (G × S, bins) counts), the hist groups' sites side by side;
        partials: (n, C, 8) and (n, U, 3), the rows' mergeable partials (a file made with ``unit_columns``);
        scalar_names: the names of the scalar columns, when they grew since the file was made (a name passed
        at a later step gets its dataset now, NaN in the rows before).

        Raises:
            RunFileError: a write or flush failed; the file is frozen with the rows committed before.
        """
        n = len(steps)
        if n == 0:
            return
        if self.frozen:
            raise RunFileError(f"{self.path} takes no more rows after a write error")
        start, end = self.rows, self.rows + n
        columns = self._columns
        new_names = [name for name in (scalar_names or ()) if name not in self.scalar_names]

        def data() -> None:  # phase 1: every column but step, then a flush
            for name in new_names:  # NaN (the fill value) in the rows before this append
                columns[f"scalars/{name}"] = _scalar_column(self._file, name, self.chunk_rows)
                self.scalar_names.append(name)
            _extend(columns["time"], start, end, times)
            sites = stats[:, :self.sites, STATISTICS.index("nonfinite")]
            _extend(columns[ROW_NONFINITE], start, end, (sites > 0).any(axis=1).astype(np.uint8))
            first = 0
            for group, width in self.stat_groups:
                part, first = stats[:, first:first + width], first + width
                for index, name in enumerate(STATISTICS):
                    _extend(columns[f"{group}/{name}"], start, end, part[:, :, index].astype(np.float32))
            for index, name in enumerate(self.scalar_names):
                _extend(columns[f"scalars/{name}"], start, end, scalars[:, index])
            if self.unit_columns is not None:
                assert partials is not None, "a file with partials takes them with every row"
                for values, group, names in zip(partials, (PARTIALS, UNIT_PARTIALS), (PARTIAL_NAMES, UNIT_PARTIAL_NAMES)):
                    for index, name in enumerate(names):
                        _extend(columns[f"{group}/{name}"], start, end, values[:, :, index])
            if hist and self.hist_groups:
                h0, h1 = self.hist_rows, self.hist_rows + len(hist)
                for g, group in enumerate(self.hist_groups):
                    _extend(columns[f"hist/{group}"], h0, h1,
                            np.stack([counts[g * self.sites:(g + 1) * self.sites] for _, counts in hist]))
            self._file.flush()

        def commit() -> None:  # phase 2: step (and hist/step), then a flush: now the rows are committed
            if hist and self.hist_groups:
                _extend(columns["hist/step"], self.hist_rows, self.hist_rows + len(hist),
                        np.array([steps[row] for row, _ in hist], dtype=np.int64))
            _extend(columns["step"], start, end, steps)
            self._file.flush()

        self._checked("writing rows", data)
        self._checked("committing rows", commit)
        self.rows = end
        if self.hist_groups:
            self.hist_rows += len(hist)

    def close(self) -> None:
        """Close the file; after a write error it was closed already, frozen as it was.

        Raises:
            RunFileError: the last flush failed; the file is frozen with the rows committed before.
        """
        if self._file.id.valid:
            self._checked("closing", self._file.close)  # closes the kept objects too, checked
            self._columns.clear()

    def _checked(self, what: str, operation: Callable[[], None]) -> None:
        try:
            operation()
        except Exception as exc:
            self._freeze_and_close()
            raise RunFileError(f"writing {self.path} failed ({what}: {_reason(exc)}); the file keeps the "
                               f"{self.rows} rows committed before") from None

    def _freeze_and_close(self) -> None:
        """Point the file's descriptor at /dev/null, then close: what is on disk stays as it is now."""
        self.frozen = True
        try:
            if self._file.id.valid:
                fd = self._file.id.get_vfd_handle()
                null = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(null, fd)
                finally:
                    os.close(null)
        except Exception:  # noqa: BLE001 — a file we cannot freeze is closed as it is
            pass
        self._columns.clear()  # closing a dataset flushes its chunks: only now, into /dev/null
        try:
            if self._file.id.valid:
                self._file.close()
        except Exception:  # noqa: BLE001 — its writes go to /dev/null: nothing is left to report
            pass


def _column(f: h5py.File, name: str, chunk_rows: int) -> h5py.Dataset:
    """A float64 column of one value per row, NaN until written."""
    return f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(chunk_rows,),
                            fillvalue=np.nan)


def _scalar_column(f: h5py.File, name: str, chunk_rows: int) -> h5py.Dataset:
    """The column of scalar ``name``: ``scalars/<scalar_key(name)>``, with the name as an attribute when the
    key differs (a name with ``/`` in it, as ``train/loss``)."""
    key = scalar_key(name)
    column = _column(f, f"scalars/{key}", chunk_rows)
    if key != name:
        column.attrs["name"] = name
    return column


def _extend(dataset: h5py.Dataset, start: int, end: int, values: np.ndarray) -> None:
    """Write ``values`` as rows start … end − 1 of ``dataset``, which grows to ``end`` rows when it is shorter.

    The same HDF5 calls as ``dataset.resize(end, axis=0); dataset[start:end] = values`` (values an array: HDF5
    converts its type, if it differs), made through h5py's low-level API: its high-level calls cost ~60 µs of
    Python each, which the writer thread spends holding the interpreter lock that training needs."""
    dsid = dataset.id
    shape = dsid.shape
    if shape[0] < end:
        shape = (end, *shape[1:])
        dsid.set_extent(shape)
    rows = (end - start, *shape[1:])
    values = np.ascontiguousarray(values)
    if values.shape != rows:
        raise ValueError(f"rows of shape {values.shape} for {rows} of {dataset.name}")
    space = dsid.get_space()
    space.select_hyperslab((start, *(0,) * (len(shape) - 1)), rows)
    dsid.write(h5py.h5s.create_simple(rows), space, values)


def _reason(exc: BaseException) -> str:
    """The useful part of an HDF5 error: the errno text ('No space left on device') when it has one."""
    text = " ".join(str(exc).split())
    if "error message = '" in text:
        return text.split("error message = '", 1)[1].split("'", 1)[0]
    return text[:200] or type(exc).__name__


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

