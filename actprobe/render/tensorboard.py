"""``actprobe export RUN --tensorboard DIR``: a run's statistics as TensorBoard event files.

Written with the ``tensorboard`` package's own event writer (an optional extra, ``actprobe[tensorboard]``;
no torch, no TensorFlow). Tags: ``<statistic>/<site>`` for the outputs' statistics, ``grad_<statistic>/
<site>`` for the gradients', ``scalars/<name>`` for what ``probe.step`` was given, and — when the file
has histograms — ``hist/<site>`` (and ``grad_hist/<site>``) with actprobe's bins. The step of each value
is the row's training step; its wall time the file's ``created`` time plus the row's ``time``. NaN is no
value (a site that did not fire); ±Inf is written. Exporting again into the same folder replaces the
earlier export (its files end in ``.actprobe``); other event files there are left alone.
Statistics are read block by block: memory does not grow with the rows.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OptionError
from ..runfile.format import STATISTICS
from ..runfile.lazy import row_blocks
from ..runfile.reader import Run
from .text import printable

DEFAULT_STATISTICS = ("mean", "std", "near_zero", "dead", "nonfinite")
SUFFIX = ".actprobe"  # actprobe's event files end so: an export replaces its own earlier files, no one else's


def _tensorboard() -> tuple[Any, Any, Any]:
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise OptionError("--tensorboard needs the tensorboard package: pip install 'actprobe[tensorboard]'") from None
    return event_pb2, summary_pb2, EventFileWriter


def export_tensorboard(run: Run, folder: Path, statistics: Sequence[str] = DEFAULT_STATISTICS) -> tuple[Path, int]:
    """Write ``run`` into a new event file in ``folder``; returns the file and the number of values written.

    Raises:
        OptionError: tensorboard is not installed, a statistic is unknown, or ``folder`` is a file.
    """
    event_pb2, summary_pb2, EventFileWriter = _tensorboard()
    statistics = list(dict.fromkeys(statistics))
    unknown = [name for name in statistics if name not in STATISTICS]
    if unknown or not statistics:
        raise OptionError(f"unknown statistic {', '.join(unknown)}; available: {', '.join(STATISTICS)}" if unknown
                          else f"--stats names no statistic; available: {', '.join(STATISTICS)}")
    if not str(folder).strip():
        raise OptionError("--tensorboard needs a folder")
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"--tensorboard {folder} is a file; name a folder")
    folder.mkdir(parents=True, exist_ok=True)
    for earlier in folder.glob(f"events.out.tfevents.*{SUFFIX}"):  # an export replaces actprobe's earlier one
        earlier.unlink()
    writer = EventFileWriter(str(folder), filename_suffix=SUFFIX)
    start = _created(run)
    steps, times = run.step.astype(np.int64), run.time.astype(np.float64)
    sites = [printable(site) for site in run.sites]
    written = 0

    def scalar(tag: str, values: np.ndarray, first: int) -> None:
        nonlocal written
        for row, value in enumerate(values, start=first):
            if not np.isnan(value):  # NaN: no value; ±Inf is one (a loss that blew up)
                summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
                writer.add_event(event_pb2.Event(wall_time=start + times[row], step=int(steps[row]), summary=summary))
                written += 1

    try:
        for prefix, group in (("", run.stats), ("grad_", run.grad_stats)):
            for name in statistics if group else ():
                for first, block in row_blocks(group[name]):
                    for column, site in enumerate(sites):
                        scalar(f"{prefix}{name}/{site}", block[:, column], first)
        for name, values in run.scalars.items():
            scalar(f"scalars/{printable(name)}", values, 0)
        if run.hist is not None:
            written += _histograms(run, writer, event_pb2, summary_pb2, start, sites)
    finally:
        writer.close()
    files = sorted(folder.glob(f"events.out.tfevents.*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
    return files[-1], written


def _histograms(run: Run, writer: Any, event_pb2: Any, summary_pb2: Any, start: float, sites: list[str]) -> int:
    """Each histogram row as TensorBoard histograms: actprobe's bins (the outer ones end at ±1e300, as
    TensorBoard takes no infinite limit), and the row's count, min, max, sum and sum of squares."""
    hist = run.hist
    assert hist is not None
    limits = np.clip(np.asarray(hist.edges[1:], dtype=np.float64), -1e300, 1e300)
    written = 0
    for h, step in enumerate(hist.step):
        row = int(np.searchsorted(run.step, step))
        for group, prefix, stats in (("counts", "hist", run.stats), ("grad_counts", "grad_hist", run.grad_stats)):
            if group not in hist.groups:
                continue
            counts = hist.counts(group, h)  # (S, B)
            for column, site in enumerate(sites):
                n = float(counts[column].sum())
                if n == 0:
                    continue
                mean, std = float(stats["mean"][row, column]), float(stats["std"][row, column])
                proto = summary_pb2.HistogramProto(
                    min=float(stats["min"][row, column]), max=float(stats["max"][row, column]), num=n,
                    sum=mean * n, sum_squares=(std * std + mean * mean) * n,
                    bucket_limit=limits.tolist(), bucket=counts[column].tolist())
                summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=f"{prefix}/{site}", histo=proto)])
                writer.add_event(event_pb2.Event(wall_time=start + float(run.time[row]), step=int(step), summary=summary))
                written += 1
    return written


def _created(run: Run) -> float:
    """The file's creation time as seconds since the epoch (0 when it has none)."""
    try:
        return _dt.datetime.fromisoformat(str(run.attrs.get("created"))).timestamp()
    except ValueError:
        return 0.0
