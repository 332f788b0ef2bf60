"""Checking an open run file against docs/FORMAT.md before any of its data is read.

Every object is looked up without following links, checked for its kind (dataset or group), its
dtype, its rank and its length, and the data to be read is bounded by the file's own size: a
damaged or hostile file gives a ``FormatError`` naming what is wrong, never a traceback, a huge
allocation or a long decompression.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._text import one_line
from ..errors import FormatError
from .format import (FORMAT_NAME, FORMAT_VERSION, GRAD_STATS, GRAPH_INPUT, PARAM_GROUPS, PARTIAL_NAMES, PARTIALS,
                     STATISTICS, STATS, STEP_FILL, UNIT_PARTIAL_NAMES, UNIT_PARTIALS)

MAX_SITES = 1_000_000
MAX_NAME_BYTES = 4096  # a fixed-length site name or module type
MAX_EPOCHS = 1_000_000
MAX_ATTRIBUTE_BYTES = 1 << 20
SLACK_BYTES = 64 << 20  # data may exceed the file's size by this (fill values of a crashed writer)


@dataclass(frozen=True)
class Shape:
    """What a checked file holds: S sites, the scalar and epoch columns, the committed rows."""

    sites: int
    scalars: tuple[str, ...]
    epochs: tuple[str, ...]
    rows: int  # committed rows: steps ≥ 0 and increasing, and every column at least this long


class Checker:
    """Checks one open file; ``budget`` bytes of data may be read from it in all."""

    def __init__(self, f: h5py.File, path: Path) -> None:
        self.f, self.path = f, path
        self.budget = SLACK_BYTES + 4 * path.stat().st_size

    def fail(self, what: str) -> FormatError:
        return FormatError(f"{self.path} is damaged: {what}")

    def node(self, name: str, kind: type, *, required: bool = True) -> Any:
        """The object ``name`` if it is a hard link to an object of ``kind``; None if absent and optional."""
        try:
            link = self.f.get(name, getlink=True)
        except (KeyError, RuntimeError, OSError, ValueError) as exc:
            raise self.fail(f"cannot look up {name!r} ({one_line(exc, limit=80)})") from None
        if link is None:
            if required:
                raise self.fail(f"it has no {name!r}")
            return None
        if not isinstance(link, h5py.HardLink):
            raise self.fail(f"{name!r} is a {type(link).__name__}, not a {kind.__name__.lower()}")
        try:
            node = self.f[name]
        except (KeyError, RuntimeError, OSError, ValueError) as exc:
            raise self.fail(f"cannot open {name!r} ({one_line(exc, limit=80)})") from None
        if not isinstance(node, kind):
            raise self.fail(f"{name!r} is a {type(node).__name__.lower()}, not a {kind.__name__.lower()}")
        return node

    def dataset(self, name: str, kinds: str, ndim: int, *, required: bool = True) -> h5py.Dataset | None:
        """A dataset of rank ``ndim`` whose dtype kind is one of ``kinds`` (NumPy's letters)."""
        ds = self.node(name, h5py.Dataset, required=required)
        if ds is None:
            return None
        try:
            ds.refresh()  # the writer may have extended it since the file was opened (SWMR)
        except (RuntimeError, OSError, ValueError):
            pass
        if len(ds.shape) != ndim:
            raise self.fail(f"{name!r} has {len(ds.shape)} dimensions, not {ndim}")
        if ds.dtype.kind not in kinds or ds.dtype.names is not None:
            raise self.fail(f"{name!r} holds {ds.dtype}, not {_kind_names(kinds)}")
        return ds

    def spend(self, name: str, nbytes: int) -> None:
        """Count ``nbytes`` against the budget: refuse data that the file cannot hold."""
        self.budget -= nbytes
        if self.budget < 0:
            raise self.fail(f"{name!r} declares more data ({nbytes:,} bytes) than a file of "
                            f"{self.path.stat().st_size:,} bytes holds")


def check_root(f: h5py.File, path: Path) -> dict[str, Any]:
    """The root attributes, checked: an actprobe file of a version this reader knows."""
    attrs = {}
    for key in f.attrs:
        try:
            size = h5py.h5a.open(f.id, key.encode()).get_storage_size()
        except (KeyError, RuntimeError, OSError, ValueError):
            raise FormatError(f"{path} is damaged: its attribute {key!r} cannot be read") from None
        if size > MAX_ATTRIBUTE_BYTES:
            raise FormatError(f"{path} is damaged: its attribute {key!r} holds {size:,} bytes")
        try:
            attrs[key] = plain(f.attrs[key])
        except (OSError, RuntimeError, TypeError, ValueError):
            raise FormatError(f"{path} is damaged: its attribute {key!r} cannot be read") from None
    if attrs.get("format") != FORMAT_NAME:
        raise FormatError(f"{path} is an HDF5 file but not an actprobe run file (no format='actprobe' attribute)")
    version = attrs.get("format_version")
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise FormatError(f"{path} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise FormatError(f"{path} has format_version {version}; this actprobe reads up to "
                          f"{FORMAT_VERSION}: upgrade actprobe")
    return attrs


def check_columns(c: Checker) -> tuple[int, np.ndarray, tuple[str, ...], tuple[str, ...], list[str]]:
    """The site count, the committed steps, the scalar names, the stat groups (``stats``, and those of
    ``STAT_GROUPS``/``PARAM_GROUPS`` the file has) and the parameter names, with every column checked."""
    count = c.dataset("sites", "SOU", 1).shape[0]
    if count > MAX_SITES:
        raise c.fail(f"it declares {count:,} sites")
    for name in ("sites", "site_module_type"):
        ds = c.dataset(name, "SOU", 1)  # sites again: its dtype is checked here, with its twin's
        if ds.shape[0] != count:
            raise c.fail(f"{name!r} has {ds.shape[0]} entries for {count} sites")
        check_names(c, name, ds)
    units = c.dataset("site_unit_dim", "iu", 1, required=False)
    if units is not None and units.shape[0] != count:
        raise c.fail(f"'site_unit_dim' has {units.shape[0]} entries for {count} sites")
    step = c.dataset("step", "iu", 1)
    c.spend("step", 8 * step.shape[0])
    steps = committed(np.asarray(step[()], dtype=np.int64))
    rows = len(steps)
    params = c.dataset("params", "SOU", 1, required=False)
    if params is not None:
        check_names(c, "params", params)  # counted against the budget before it is read
    param_names = [text(v) for v in params[()]] if params is not None else []
    groups = (STATS,) + tuple(g for g in (GRAD_STATS, *PARAM_GROUPS) if c.node(g, h5py.Group, required=False) is not None)
    ndims = c.dataset("param_ndim", "iu", 1, required=False)
    if ndims is not None and ndims.shape[0] != len(param_names):
        raise c.fail(f"'param_ndim' has {ndims.shape[0]} entries for {len(param_names)} parameters")
    found = [g for g in PARAM_GROUPS if g in groups]
    if found and (params is None or len(found) < len(PARAM_GROUPS)):
        raise c.fail(f"it has {', '.join(found)} but not " + ("'params'" if params is None else
                     ", ".join(g for g in PARAM_GROUPS if g not in found)))
    width = {g: len(param_names) if g in PARAM_GROUPS else count for g in groups}
    # a group present has every statistic (the probe writes each group whole), or the file is bad
    columns = [("time", "f", 1)] + [(f"{group}/{name}", "f", 2) for group in groups for name in STATISTICS]
    scalars = c.node("scalars", h5py.Group)
    names = tuple(scalars)
    columns += [(f"scalars/{name}", "f", 1) for name in names]
    for name, kinds, ndim in columns:
        ds = c.dataset(name, kinds, ndim)
        if ds.shape[0] < rows:
            raise c.fail(f"{name!r} has {ds.shape[0]} rows; 'step' commits {rows}")
        expected = width.get(name.split("/", 1)[0], count)
        if ndim == 2 and ds.shape[1] != expected:
            raise c.fail(f"{name!r} has {ds.shape[1]} columns for {expected} "
                         f"{'parameters' if name.split('/', 1)[0] in PARAM_GROUPS else 'sites'}")
        c.spend(name, rows * (expected if ndim == 2 else 1) * 8)
    return count, steps, names, groups, param_names


def check_hist(c: Checker, sites: int, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]] | None:
    """The histograms (``hist/``): bin edges, the committed histogram rows' steps (those whose row is
    committed too) and the count datasets; None when the file has none."""
    if c.node("hist", h5py.Group, required=False) is None:
        return None
    edges_ds = c.dataset("hist/edges", "f", 1)
    c.spend("hist/edges", 8 * edges_ds.shape[0])  # before it is read
    edges = np.asarray(edges_ds[()], dtype=np.float64)
    if len(edges) < 2 or not np.all(edges[1:] > edges[:-1]):
        raise c.fail("'hist/edges' is not increasing")
    hist_step = c.dataset("hist/step", "iu", 1)
    c.spend("hist/step", 8 * hist_step.shape[0])
    rows = committed(np.asarray(hist_step[()], dtype=np.int64))
    rows = rows[np.isin(rows, steps)]  # a histogram row counts once its row is committed
    groups = tuple(g for g in ("counts", "grad_counts") if c.node(f"hist/{g}", h5py.Dataset, required=False) is not None)
    if "counts" not in groups:
        raise c.fail("it has 'hist' but no 'hist/counts'")
    for group in groups:
        ds = c.dataset(f"hist/{group}", "f", 3)
        if ds.shape[0] < len(rows) or ds.shape[1:] != (sites, len(edges) - 1):
            raise c.fail(f"'hist/{group}' has shape {ds.shape}; {len(rows)} rows of {sites} sites × "
                         f"{len(edges) - 1} bins expected")
    return edges, rows, groups


def check_partials(c: Checker, rows: int, columns: int) -> np.ndarray | None:
    """A rank file's mergeable partials: every ``partials/`` and ``unit_partials/`` dataset with at least
    ``rows`` rows and the right width; returns the (C, 2) unit columns, None when the file has none."""
    if c.node(PARTIALS, h5py.Group, required=False) is None:
        return None
    layout = c.dataset(f"{UNIT_PARTIALS}/columns", "iu", 2)
    if layout.shape != (columns, 2):
        raise c.fail(f"'{UNIT_PARTIALS}/columns' has shape {layout.shape}, not ({columns}, 2)")
    c.spend(f"{UNIT_PARTIALS}/columns", 16 * columns)
    units = np.asarray(layout[()], dtype=np.int64)
    owned = units[units[:, 0] >= 0]
    total = int(owned[:, 1].sum()) if len(owned) else 0
    if (owned[:, 1] < 1).any() or (owned[:, 0] + owned[:, 1] > total).any():
        raise c.fail(f"'{UNIT_PARTIALS}/columns' points outside its {total} unit columns")
    for group, names, width in ((PARTIALS, PARTIAL_NAMES, columns), (UNIT_PARTIALS, UNIT_PARTIAL_NAMES, total)):
        for name in names:
            ds = c.dataset(f"{group}/{name}", "f", 2)
            if ds.shape[0] < rows or ds.shape[1] != width:
                raise c.fail(f"'{group}/{name}' has shape {ds.shape}; {rows} rows of {width} columns expected")
            c.spend(f"{group}/{name}", rows * width * 8)
    return units


def check_epochs(c: Checker) -> tuple[str, ...]:
    """The names of the ``epochs/`` columns (recipe files), each one-dimensional, numeric and bounded."""
    group = c.node("epochs", h5py.Group, required=False)
    if group is None:
        return ()
    for name in group:
        ds = c.dataset(f"epochs/{name}", "iuf", 1)
        if ds.shape[0] > MAX_EPOCHS:
            raise c.fail(f"'epochs/{name}' declares {ds.shape[0]:,} epochs")
        c.spend(f"epochs/{name}", 8 * ds.shape[0])
    return tuple(group)


def check_graph(c: Checker, sites: int) -> tuple[np.ndarray | None, list[str]]:
    """The layer graph's edges ((E, 2) int64, every entry a site column or −1 as a source), and the
    names of the modules never called; ``(None, [])`` for a file written without a graph."""
    if c.node("graph", h5py.Group, required=False) is None:
        return None, []
    ds = c.dataset("graph/edges", "iu", 2)
    if ds.shape[1] != 2:
        raise c.fail(f"'graph/edges' has {ds.shape[1]} columns, not 2")
    c.spend("graph/edges", 16 * ds.shape[0])
    edges = np.asarray(ds[()], dtype=np.int64).reshape(-1, 2)
    if len(edges) and (edges.min() < GRAPH_INPUT or edges.max() >= sites or edges[:, 1].min() < 0):
        raise c.fail("'graph/edges' names a site column that does not exist")
    uncalled = c.dataset("graph/uncalled", "SOU", 1, required=False)
    if uncalled is None:
        return edges, []
    check_names(c, "graph/uncalled", uncalled)
    return edges, [text(v) for v in uncalled[()]]


def check_names(c: Checker, name: str, ds: h5py.Dataset) -> None:
    """A dataset of names: strings (not other objects) of at most MAX_NAME_BYTES, counted against the budget."""
    if ds.dtype.kind == "O" and h5py.check_string_dtype(ds.dtype) is None:
        raise c.fail(f"{name!r} holds objects that are not strings")
    if ds.dtype.itemsize > MAX_NAME_BYTES:
        raise c.fail(f"{name!r} declares names of {ds.dtype.itemsize:,} bytes")
    c.spend(name, ds.shape[0] * max(ds.dtype.itemsize, 64))


def committed(steps: np.ndarray) -> np.ndarray:
    """The committed prefix of ``step``: up to the first entry that is the fill value (or any negative
    number) or not larger than the one before — what a writer stopped mid-commit leaves."""
    bad = steps < 0 if STEP_FILL < 0 else steps == STEP_FILL
    if len(steps) > 1:
        bad[1:] |= steps[1:] <= steps[:-1]
    first_bad = np.flatnonzero(bad)
    return steps[:first_bad[0]] if len(first_bad) else steps


def plain(value: Any) -> Any:
    """An attribute value as Python: str for bytes, a Python number for NumPy scalars."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _kind_names(kinds: str) -> str:
    words = {"f": "floats", "i": "integers", "u": "integers", "S": "strings", "O": "strings", "U": "strings"}
    return " or ".join(dict.fromkeys(words[k] for k in kinds))
