"""Where a probe's rows go: its run file, claimed when the probe is made and created when its first
recorded step ends.

The sink holds the single-writer lock from the probe's creation to its close, and wires the rows
staged by the recorder to a background writer thread (``runfile.writer``) that commits them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..runfile.format import STATS, Site, SiteGraph
from ..runfile.lock import claim_path
# Imported with the engine, not lazily: h5py registers an atexit handler that closes every file, and
# it must be registered before the probe's own (atexit runs handlers last-in first-out), so that a
# probe never closed is committed at exit before h5py closes its file.
from ..runfile.storage import RunFileWriter
from ..runfile.writer import Batch, BackgroundWriter


class FileSink:
    """The run file at ``path``: claimed on creation (``RunFileError`` when it cannot be)."""

    def __init__(self, path: Path, *, overwrite: bool) -> None:
        self.path = path
        self._lock = claim_path(path, overwrite)
        self._writer: BackgroundWriter | None = None

    def open(self, sites: Sequence[Site], scalar_names: Sequence[str], attributes: Mapping[str, Any],
             chunk_rows: int, graph: SiteGraph | None = None, stat_groups: Sequence[str] = (STATS,),
             params: Sequence[str] = (), hist_groups: Sequence[str] = (), param_ndims: Sequence[int] = (),
             unit_columns: Any = None, param_sharded: Sequence[bool] = ()) -> None:
        """Start the writer thread, which creates the file with these columns at once (no rows yet);
        ``unit_columns``: with the rows' mergeable partials (a rank of a distributed run)."""
        sites, names, path, groups, params = list(sites), list(scalar_names), self.path, tuple(stat_groups), list(params)
        hist, ndims = tuple(hist_groups), list(param_ndims)
        self._writer = BackgroundWriter(lambda: RunFileWriter(
            path, sites=sites, scalar_names=names, attributes=attributes, chunk_rows=chunk_rows, graph=graph,
            stat_groups=groups, params=params, hist_groups=hist, param_ndims=ndims, unit_columns=unit_columns,
            param_sharded=list(param_sharded)))

    @property
    def opened(self) -> bool:
        return self._writer is not None

    @property
    def writer(self) -> BackgroundWriter | None:
        """The writer thread once the file is open (its ``error`` says whether it stopped on one)."""
        return self._writer

    def submit(self, batch: Batch) -> None:
        assert self._writer is not None, "open() comes before submit()"
        self._writer.submit(batch)

    def wait(self) -> None:
        """Return once every batch submitted so far is committed (or failed)."""
        if self._writer is not None:
            self._writer.wait()

    @property
    def error(self) -> BaseException | None:
        """The writer thread's error, once it has stopped on one."""
        return None if self._writer is None else self._writer.error

    @property
    def rows_written(self) -> int:
        return 0 if self._writer is None else self._writer.rows_written

    def close(self) -> None:
        """Commit what is queued and close the file (the lock stays until ``release``)."""
        if self._writer is not None:
            self._writer.close()

    def release(self) -> None:
        self._lock.release()

