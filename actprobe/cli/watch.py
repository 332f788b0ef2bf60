"""``actprobe watch RUN``: follow a run file (or a distributed run's folder) while a probe writes it.

Every ``interval`` seconds the run is read again (only its first and last rows and what the rules look
at); when it has new rows, the view is drawn anew: in a terminal, the summary table of ``show`` (flagged
sites highlighted, the current findings under it) redrawn in place; elsewhere (a pipe, a log file), one
line per change — rows, last step, the verdict. The watch ends when the writer closes the file (the last
summary stays on screen), when Ctrl-C is pressed (exit 130), or when the file has had no new rows for
``idle`` seconds while no writer on this machine holds it (a crashed writer, or one on another machine
that went quiet: a file on a shared filesystem written elsewhere is followed as long as it grows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..analysis.summary import state, summarize
from ..analysis.thresholds import Thresholds
from ..errors import OptionError
from ..render.summary import SummaryReport, verdict_line
from ..render.text import printable
from ..runfile.reader import Run, read
from .codes import EXIT_INTERRUPTED


MAX_INTERVAL = 86400.0  # a day between two looks, at most


@dataclass(frozen=True)
class WatchOptions:
    interval: float = 2.0  # seconds between two reads
    idle: float = 120.0  # give up after this long without new rows and without a local writer
    rank: int | None = None
    flagged: bool = False
    thresholds: tuple[str, ...] = ()


def watch(path: Path, options: WatchOptions, console: Console | None = None,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Follow ``path`` until its writer is done; the exit code (0, or 130 on Ctrl-C)."""
    from .._checks import check_number

    check_number("--interval", options.interval, strict=True)
    check_number("--idle", options.idle, strict=True, allow_inf=True)
    if options.interval > MAX_INTERVAL:
        raise OptionError(f"--interval must be at most {MAX_INTERVAL:g} seconds, got {options.interval:g}")
    console = console or Console()
    thresholds = Thresholds.parse(options.thresholds)
    seen, last_change = -2, time.monotonic()  # -1: no file yet
    live = None
    try:
        while True:
            run = _read(path, options.rank)
            active = run is not None and run.live
            rows = -1 if run is None else run.rows
            if rows != seen:
                seen, last_change = rows, time.monotonic()
                report = _report(path, run, thresholds, options.flagged)
                if console.is_terminal:
                    if live is None:
                        from rich.live import Live

                        live = Live(report, console=console, auto_refresh=False, transient=False)
                        live.start()
                    live.update(report, refresh=True)
                else:
                    console.print(printable(_line(path, run, thresholds)), highlight=False, markup=False, soft_wrap=True)
            if run is not None and run.closed and not active:
                console.print(printable(f"{path}: its writer closed it; {run.rows} recorded steps"),
                              highlight=False, markup=False, soft_wrap=True)
                return 0
            if not active and time.monotonic() - last_change > options.idle:
                if run is None:
                    console.print(printable(f"{path}: no such file after {options.idle:g} s: stopped watching"),
                                  highlight=False, markup=False, soft_wrap=True)
                    return 2
                console.print(printable(f"{path}: no new rows for {options.idle:g} s and no writer on this machine: "
                                        "stopped watching (a crashed writer, or one elsewhere that went quiet)"),
                              highlight=False, markup=False, soft_wrap=True)
                return 0
            sleep(options.interval)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if live is not None:
            live.stop()


def _read(path: Path, rank: int | None) -> Run | None:
    """The run, or None while its file does not exist yet (a probe creates it at its first recorded step;
    the watch may start before the training does, and gives up after ``idle`` seconds)."""
    if not path.exists():
        return None
    return read(path, rank=rank)


def _report(path: Path, run: Run | None, thresholds: Thresholds, flagged: bool) -> object:
    from rich.text import Text

    if run is None or run.rows == 0:
        return Text(printable(f"{path}: " + ("waiting for its first recorded step" if run is None
                                              else state(run, run.live))))
    return SummaryReport(summarize(run, thresholds, live=run.live).pick(flagged=flagged))


def _line(path: Path, run: Run | None, thresholds: Thresholds) -> str:
    if run is None:
        return f"{path}: waiting for the file (a probe creates it at its first recorded step)"
    if run.rows == 0:
        return f"{path}: no rows committed yet"
    summary = summarize(run, thresholds, live=run.live)
    text, _ = verdict_line(summary)
    return f"{path}: {run.rows} rows, last step {int(run.step[-1])}; {text}"
