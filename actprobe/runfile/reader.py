"""Reading a run file: ``read(path) -> Run``. Works on files still being written.

The file's structure, its sites, steps, times, scalars, epochs and layer graph are read at once; the
statistics, the bulk of a file (T × S × 8 values), are read on demand (``lazy``), so that a command
that shows two rows reads two rows."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._text import one_line
from ..errors import FormatError
from ._swmr import open_swmr
from .format import GRAD_STATS, PARAM_GROUPS, ROW_NONFINITE, STATISTICS
from .lazy import Source, Statistic
from .validate import Checker, check_columns, check_epochs, check_graph, check_hist, check_partials, check_root, text

LIVE_ATTEMPTS = 3  # reads of a file that a live writer is extending


class Histograms:
    """A run file's histograms: ``edges`` (B + 1,), ``step`` (H,) the steps of the histogram rows, and
    ``counts(group, rows)`` → (len(rows), S, B) float64 read on demand; groups ``counts`` (the outputs)
    and, with gradients, ``grad_counts``."""

    def __init__(self, source: Source, edges: np.ndarray, step: np.ndarray, groups: tuple[str, ...]) -> None:
        self.path, self._source, self.edges, self.step, self.groups = source.path, source, edges, step, groups

    def counts(self, group: str = "counts", rows: Any = slice(None), columns: Any = None) -> np.ndarray:
        """Histogram rows ``rows`` (an int, a slice or indices of ``step``) of the sites ``columns`` (all
        when None): (rows, S, B), or (S, B) for one row; read from the file now, row by row."""
        if group not in self.groups:
            raise FormatError(f"{self.path} has no histograms {group!r}; it has {', '.join(self.groups)}")
        index = np.arange(len(self.step))[rows]
        with self._source.reading() as f:  # the same run, or a FormatError
            data = f["hist"][group]
            sites = slice(None) if columns is None else np.asarray(columns)
            picked = [np.asarray(data[int(h)], dtype=np.float64)[sites] for h in np.atleast_1d(index)]
            shape = np.zeros(data.shape[1:])[sites].shape
        if np.ndim(index) == 0:
            return picked[0]
        return np.stack(picked) if picked else np.zeros((0, *shape))


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
    # name -> (T, S) float32, read from the file on demand (``lazy.Statistic``: index it like an array,
    # ``np.asarray`` reads it all); a plain array in a Run made by hand
    stats: dict[str, Any] = field(repr=False)
    scalars: dict[str, np.ndarray] = field(repr=False)  # name -> (T,) float64
    epochs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # recipe files: name -> (E,)
    # (E, 2) int64: the layer graph's edges (source column or −1, target column); None: not recorded
    edges: np.ndarray | None = field(default=None, repr=False)
    uncalled: list[str] = field(default_factory=list)  # selected modules never called in the first step
    closed: bool = True  # False: its writer has not closed it (still writing, crashed, or stopped on an error)
    # name -> (T, S): statistics of d(loss)/d(output) of each site (``Probe(grads=True)``); empty when
    # the file has none
    grad_stats: dict[str, Any] = field(default_factory=dict, repr=False)
    params: list[str] = field(default_factory=list)  # parameter tensors recorded (``Probe(params=True)``)
    param_ndims: np.ndarray | None = field(default=None, repr=False)  # (P,) their numbers of dimensions
    # group (``param_stats``, ``param_grad_stats``, ``update_stats``) -> name -> (T, P); empty without params
    param_stats: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    hist: Histograms | None = field(default=None, repr=False)  # ``Probe(hist_every=k)``: see ``Histograms``
    # a rank file of a distributed run: (C, 2) first unit column (−1: none) and units of each column of its
    # mergeable partials (``partials/``, ``unit_partials/``); None otherwise
    unit_columns: np.ndarray | None = field(default=None, repr=False)
    # a distributed run read as one (``read(folder)``): the runs of its ranks, rank by rank; empty otherwise
    ranks: tuple[Run, ...] = field(default=(), repr=False)
    # a rank file with parameters: (P,) whether this rank held a shard of each (FSDP2) or the whole (DDP)
    param_sharded: np.ndarray | None = field(default=None, repr=False)
    # (T,) bool: rows where a site's output held a NaN or an Inf (``row_nonfinite``); None in files before 0.4
    row_nonfinite: np.ndarray | None = field(default=None, repr=False)
    notes: tuple[str, ...] = ()  # what a reader should know about how the run was put together

    @property
    def distributed(self) -> bool:
        """Whether this is a distributed run merged from its ranks' files."""
        return bool(self.ranks)

    @property
    def live(self) -> bool:
        """Whether a probe is writing the file now (any rank's file, for a distributed run)."""
        return any(_live(run.path) for run in self.ranks) if self.ranks else _live(self.path)

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

    def stat(self, name: str, site: str | None = None, *, grad: bool = False) -> np.ndarray:
        """One statistic as an array: (T, S), or (T,) for one site (read from the file now); with
        ``grad``, of the gradients with respect to the sites' outputs."""
        if name not in STATISTICS:
            raise FormatError(f"unknown statistic {name!r}; available: {', '.join(STATISTICS)}")
        if grad and not self.grad_stats:
            raise FormatError(f"{self.path} has no gradient statistics (record with grads=True)")
        values = (self.grad_stats if grad else self.stats)[name]
        return np.asarray(values) if site is None else np.asarray(values[:, self.site_index(site)])

    def update_ratio(self) -> np.ndarray:
        """(T, P) float64: each parameter's update-to-data ratio std(Δw) / std(w) at each recorded step."""
        if not self.param_stats:
            raise FormatError(f"{self.path} has no parameter statistics (record with params=True, optimizer=…)")
        update = np.asarray(self.param_stats["update_stats"]["std"], dtype=np.float64)
        values = np.asarray(self.param_stats["param_stats"]["std"], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return update / values

    def to_pandas(self, statistics: Any = None, *, grad: bool = False) -> Any:
        """The statistics as a long ``pandas.DataFrame``: one row per (step, site, statistic), columns
        ``step``, ``site``, ``module_type``, ``statistic``, ``value`` (float64); with ``grad``, the
        gradients' (``grad_stats``). ``statistics``: names to include (default: all eight). Reads every
        row of them: for a very long run, slice ``run.stats`` instead. Needs pandas (``actprobe[pandas]``).

        Raises:
            FormatError: an unknown statistic, or ``grad`` on a run without gradient statistics.
            ImportError: pandas is not installed (the message names the extra).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Run.to_pandas() needs pandas: pip install 'actprobe[pandas]'") from None
        names = list(STATISTICS if statistics is None else ([statistics] if isinstance(statistics, str) else statistics))
        frames = []
        sites = np.asarray(self.sites, dtype=object)
        kinds = np.asarray(self.site_module_types, dtype=object)
        for name in names:
            values = self.stat(name, grad=grad).astype(np.float64)  # (T, S), checked names
            frames.append(pd.DataFrame({
                "step": np.repeat(self.step, len(sites)),
                "site": np.tile(sites, self.rows),
                "module_type": np.tile(kinds, self.rows),
                "statistic": name,
                "value": values.reshape(-1),
            }))
        columns = ["step", "site", "module_type", "statistic", "value"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    @property
    def has_grads(self) -> bool:
        """Whether the file holds gradient statistics (``grad_stats``)."""
        return bool(self.grad_stats)


def read(path: str | os.PathLike[str], *, rank: int | None = None) -> Run:
    """Read a run file: every committed row, also while another process is still writing it, and
    after its writer died or stopped on a write error.

    A distributed run's folder (``Probe`` in a multi-process job) reads as one run whose statistics are
    those of the global batch, merged from its ranks' files (``runfile.distributed``); ``rank``: that
    rank's own file instead.

    The file's structure is checked against docs/FORMAT.md before its data is read (``validate``).
    A file whose writer has not committed a row yet gives a ``Run`` with no rows.

    Raises:
        FormatError: the file is missing, not HDF5, damaged, not an actprobe file, or of a newer
            format version than this actprobe reads.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FormatError(_missing(path))
    if path.is_dir():
        from .distributed import is_run_folder, read_folder

        if not is_run_folder(path):
            raise FormatError(f"{path} is a folder, not a run file (nor a distributed run's folder)")
        return read_folder(path, read, rank)
    if rank is not None:
        raise FormatError(f"{path} is a single-process run file: it has no ranks (rank= is for distributed runs)")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc})") from None
    if not is_hdf5:
        raise FormatError(f"{path} is not an HDF5 file")
    for attempt in range(LIVE_ATTEMPTS):
        try:
            return _read_once(h5py, path)
        except FormatError:
            if attempt + 1 == LIVE_ATTEMPTS or not _live(path):
                raise
            time.sleep(0.05)  # a live writer was rewriting what we read: read it again
    raise AssertionError("unreachable")


def _read_once(h5py: Any, path: Path) -> Run:
    f, closed = _open(h5py, path)
    try:
        with f:
            return _load(f, path, closed)
    except FormatError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, MemoryError) as exc:
        raise FormatError(f"{path} is damaged or incomplete: {one_line(exc)}") from None


def _h5py() -> Any:
    import h5py

    return h5py


def _live(path: Path) -> bool:
    from .lock import writer_active

    return writer_active(path)


def _missing(path: Path) -> str:
    if _live(path):
        return (f"{path}: no such file yet; a probe is recording into it and creates it when its first "
                "recorded step ends (no rows committed yet)")
    return f"{path}: no such file"


def stored_attribute(path: Path, name: str) -> Any:
    """Root attribute ``name`` of the run file ``path`` as stored (bytes decoded), None when it has none or
    the file cannot be read (a writer deciding where to write: never raising)."""
    try:
        f, _ = _open(_h5py(), path)
        with f:
            value = f.attrs.get(name)
    except (FormatError, OSError, RuntimeError, ValueError, KeyError, TypeError):
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _open(h5py: Any, path: Path) -> tuple[Any, bool]:
    """The open file, and whether its writer closed it. A finished file opens plainly. A file still
    being written, or whose writer died or stopped on a write error, carries HDF5's open-for-write
    mark (and may end before the size its superblock records): only SWMR mode opens it."""
    try:
        return h5py.File(path, "r"), True
    except OSError as plain_error:
        try:
            return open_swmr(path), False
        except (OSError, RuntimeError, ValueError):
            raise FormatError(f"{path} is damaged or incomplete: {one_line(plain_error)}") from None


def _load(f: Any, path: Path, closed: bool) -> Run:
    attrs = check_root(f, path)
    checker = Checker(f, path)
    count, steps, scalar_names, groups, params = check_columns(checker)
    for attribute, group in (("grads", GRAD_STATS), ("params", PARAM_GROUPS[0])):
        if attrs.get(attribute) is True and group not in groups:  # the probe wrote it whole, or the file is bad
            raise FormatError(f"{path} is damaged: it was recorded with {attribute}=True but has no {group!r}")
    epoch_names = check_epochs(checker)
    edges, uncalled = check_graph(checker, count)
    hist = check_hist(checker, count, steps)
    rows = len(steps)
    columns = count * (2 if GRAD_STATS in groups else 1) + len(params) * sum(g in groups for g in PARAM_GROUPS)
    unit_columns = check_partials(checker, rows, columns) if attrs.get("distributed") is True else None
    units = f["site_unit_dim"][()] if "site_unit_dim" in f else np.zeros(count, np.int8)
    opener = lambda p: _open(_h5py(), p)[0]  # noqa: E731
    source = Source(path, rows, count, opener, attrs.get("run_id"))
    param_source = Source(path, rows, len(params), opener, attrs.get("run_id"))
    return Run(
        path=path,
        attrs=attrs,
        sites=[text(v) for v in f["sites"][()]],
        site_module_types=[text(v) for v in f["site_module_type"][()]],
        site_unit_dims=np.asarray(units, dtype=np.int8),
        step=steps,
        time=np.asarray(f["time"][:rows], dtype=np.float64),
        stats={name: Statistic(source, name) for name in STATISTICS},
        grad_stats={name: Statistic(source, name, GRAD_STATS) for name in STATISTICS} if GRAD_STATS in groups else {},
        params=params,
        param_ndims=np.asarray(f["param_ndim"][()], dtype=np.int64) if "param_ndim" in f else None,
        hist=None if hist is None else Histograms(source, *hist),
        param_stats={group: {name: Statistic(param_source, name, group) for name in STATISTICS}
                     for group in PARAM_GROUPS if group in groups},
        scalars={_scalar_name(f["scalars"][key], key): np.asarray(f["scalars"][key][:rows], dtype=np.float64)
                 for key in scalar_names},
        epochs={name: f["epochs"][name][()] for name in epoch_names},
        edges=edges,
        uncalled=uncalled,
        closed=closed,
        unit_columns=unit_columns,
        param_sharded=_param_sharded(checker, len(params)) if unit_columns is not None else None,
        row_nonfinite=_row_nonfinite(checker, rows),
    )


def _scalar_name(dataset: Any, key: str) -> str:
    """A scalar's name: its dataset's ``name`` attribute when the name could not be the key (``train/loss``)."""
    name = dataset.attrs.get("name")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return name if isinstance(name, str) and name else key


def _row_nonfinite(checker: Checker, rows: int) -> np.ndarray | None:
    ds = checker.dataset(ROW_NONFINITE, "iub", 1, required=False)
    if ds is None:
        return None
    if ds.shape[0] < rows:
        raise checker.fail(f"'{ROW_NONFINITE}' has {ds.shape[0]} rows; 'step' commits {rows}")
    checker.spend(ROW_NONFINITE, rows)
    return np.asarray(ds[:rows]) > 0


def _param_sharded(checker: Checker, count: int) -> np.ndarray | None:
    ds = checker.dataset("param_sharded", "iub", 1, required=False)
    if ds is None:
        return None
    if ds.shape[0] != count:
        raise checker.fail(f"'param_sharded' has {ds.shape[0]} entries for {count} parameters")
    return np.asarray(ds[()], dtype=bool)
