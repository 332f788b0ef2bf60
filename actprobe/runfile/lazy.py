"""Statistics read from a run file on demand: ``run.stats["std"][0, 3]`` reads one block of rows, not
the whole (T, S) array.

A ``Statistic`` is indexed like the NumPy array it stands for (``[row, column]``, ``[rows, :]``,
``[:, columns]``, negative rows); ``np.asarray(statistic)`` reads it all. Reads go through the
``Source`` of the file, which reopens the file for each read (a reader holds no HDF5 handle between
reads, so that writers are never locked out), reads whole blocks of ``BLOCK_ROWS`` rows and keeps
the last ``CACHED_BLOCKS`` of them. A file replaced since ``read()`` is refused with a ``FormatError``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .._text import one_line
from ..errors import FormatError
from .format import STATS

BLOCK_ROWS = 256
CACHED_BLOCKS = 64
SCAN_BYTES = 16 << 20  # rows per read of a scan: about this many bytes


class Source:
    """The statistics of one run file: T committed rows of S sites, read block by block."""

    def __init__(self, path: Path, rows: int, sites: int, opener: Callable[[Path], Any], run_id: object) -> None:
        self.path, self.rows, self.sites = path, rows, sites
        self._opener = opener
        stat = path.stat()
        self._identity = (stat.st_dev, stat.st_ino, run_id)  # run_id: the file's own, None before 0.2
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

    def reading(self) -> Any:
        """The open file, for reads of other datasets of the same run (``reader.Histograms``): refused with a
        ``FormatError`` when the path no longer holds this run, and any read error made one."""
        return self._file()

    @contextmanager
    def _file(self) -> Iterator[Any]:
        try:
            stat = self.path.stat()
        except OSError:
            raise FormatError(f"{self.path} was removed after it was read") from None
        replaced = FormatError(f"{self.path} was replaced by another run after it was read; read it again")
        if (stat.st_dev, stat.st_ino) != self._identity[:2]:
            raise replaced
        try:
            with self._opener(self.path) as f:
                if f.attrs.get("run_id") != self._identity[2]:
                    raise replaced
                yield f
        except FormatError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise FormatError(f"{self.path} is damaged or incomplete: {one_line(exc)}") from None

    def rows_of(self, name: str, rows: np.ndarray) -> np.ndarray:
        """(len(rows), S) float32: the given rows (ascending or not, repeated or not) of dataset ``name``
        (``stats/std``)."""
        blocks = np.unique(rows // BLOCK_ROWS)
        missing = [int(b) for b in blocks if (name, int(b)) not in self._cache]
        if missing:
            with self._file() as f:
                dataset = f[name]
                for b in missing:
                    self._keep((name, b), np.asarray(dataset[b * BLOCK_ROWS:min((b + 1) * BLOCK_ROWS, self.rows)],
                                                     dtype=np.float32))
        out = np.empty((len(rows), self.sites), dtype=np.float32)
        for b in blocks:
            block = self._cache[(name, int(b))]
            self._cache.move_to_end((name, int(b)))
            chosen = rows // BLOCK_ROWS == b
            out[chosen] = block[rows[chosen] - b * BLOCK_ROWS]
        return out

    def row(self, name: str, row: int) -> np.ndarray:
        """(S,) float32: one row of statistic ``name`` (a view into its cached block)."""
        block = self._cache.get((name, row // BLOCK_ROWS))
        if block is None:
            return self.rows_of(name, np.array([row]))[0]
        self._cache.move_to_end((name, row // BLOCK_ROWS))
        return block[row % BLOCK_ROWS].copy()  # the caller's to change: never a view of the cache

    def span(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` … ``stop − 1`` in one read (not cached)."""
        with self._file() as f:
            return np.asarray(f[name][start:stop], dtype=np.float32)

    def scan(self, name: str, multiple: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows)`` blocks of about ``SCAN_BYTES`` (a multiple of ``multiple`` rows) covering
        every row, from one open file: a whole statistic looked at with bounded memory."""
        step = max(BLOCK_ROWS, SCAN_BYTES // (4 * max(self.sites, 1)))
        step = max(multiple, step - step % multiple)
        with self._file() as f:
            dataset = f[name]
            for start in range(0, self.rows, step):
                yield start, np.asarray(dataset[start:min(start + step, self.rows)], dtype=np.float32)

    def _keep(self, key: tuple[str, int], block: np.ndarray) -> None:
        self._cache[key] = block
        while len(self._cache) > CACHED_BLOCKS:
            self._cache.popitem(last=False)


class Statistic:
    """A (T, S) float32 statistic of a run file, read on demand; indexed like the array it stands for.
    ``group``: ``stats`` (the outputs) or ``grad_stats`` (their gradients)."""

    def __init__(self, source: Source, name: str, group: str = STATS) -> None:
        self._source, self.name, self.group = source, name, group
        self._key = f"{group}/{name}"  # the dataset's path in the file
        self.shape = (source.rows, source.sites)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def source(self) -> Source:
        """Where the statistic is read from (``Source.reading()`` opens the same run's file)."""
        return self._source

    def __getitem__(self, key: Any) -> Any:
        rows, columns = key if isinstance(key, tuple) and len(key) == 2 else (key, slice(None))
        if isinstance(key, tuple) and len(key) == 1:
            rows = key[0]
        if not _simple(rows) or columns is Ellipsis or columns is None or isinstance(columns, tuple):
            return np.asarray(self)[key]  # anything else: NumPy's own rules, on the whole array
        if isinstance(rows, (int, np.integer)) and not isinstance(rows, (bool, np.bool_)):
            row = int(rows) + (self.shape[0] if rows < 0 else 0)
            if not 0 <= row < self.shape[0]:
                raise IndexError(f"row {rows} is out of range for {self.shape[0]} rows")
            return self._source.row(self._key, row)[columns]
        if isinstance(rows, slice):
            if rows.step in (None, 1):
                start, stop, _ = rows.indices(self.shape[0])
                if stop - start > CACHED_BLOCKS * BLOCK_ROWS // 2:  # a long span: one read, not via the cache
                    return self._source.span(self._key, start, max(start, stop))[:, columns]
            index = np.arange(*rows.indices(self.shape[0]))
        else:  # a 1-D index array or mask: NumPy's rules (negative rows count from the end)
            index = np.arange(self.shape[0])[np.asarray(rows)]
        return self._source.rows_of(self._key, np.atleast_1d(index))[:, columns]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self._source.span(self._key, 0, self.shape[0])
        return data if dtype is None else data.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        return np.asarray(self).astype(dtype)

    def __getattr__(self, name: str) -> Any:
        # every other array attribute (tolist, mean, T, size, copy, reshape, …): on the whole array
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)

    def __iter__(self) -> Iterator[np.ndarray]:
        for row in range(self.shape[0]):
            yield self[row]

    def blocks(self, multiple: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """Every row, block by block with bounded memory: ``(first row, (n, S) rows)``, each block but the
        last a multiple of ``multiple`` rows."""
        return self._source.scan(self._key, multiple)

    def __repr__(self) -> str:
        return f"<statistic {self._key!r} of {self._source.path}: {self.shape[0]} rows × {self.shape[1]} sites, read on demand>"


def _simple(rows: Any) -> bool:
    """Whether a row index is one the block reads serve: an int, a slice, or a 1-D int or bool array."""
    if isinstance(rows, (bool, np.bool_)):
        return False
    if isinstance(rows, (int, np.integer, slice)):
        return True
    if isinstance(rows, (list, np.ndarray)):
        array = np.asarray(rows)
        return array.ndim == 1 and array.dtype.kind in "iub" and len(array) > 0
    return False


def _operator(name: str) -> Callable[..., Any]:
    def apply(self: Statistic, *other: Any) -> Any:
        return getattr(np.asarray(self), name)(*other)
    apply.__name__ = name
    return apply


for _name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "__add__", "__radd__", "__sub__",
              "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__neg__", "__abs__"):
    setattr(Statistic, _name, _operator(_name))
Statistic.__hash__ = None  # type: ignore[assignment]  # == compares values, as an array's does


def row_blocks(values: Any, multiple: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, rows)`` blocks of a statistic: a ``Statistic``'s bounded scan, or a whole array."""
    if isinstance(values, Statistic):
        yield from values.blocks(multiple)
    else:
        yield 0, np.asarray(values)
