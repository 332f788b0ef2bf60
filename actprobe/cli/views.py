"""The bodies of the commands that look at run files (``show``, ``diagnose``, ``compare``, ``plot``):
read, call the analysis, render. Known errors are ``ActprobeError``; ``app`` turns them into one line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console

from ..analysis.thresholds import Thresholds
from ..errors import OptionError
from ..render.text import printable
from ..runfile.reader import Run, read
from .codes import EXIT_FINDINGS

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class ShowOptions:
    thresholds: tuple[str, ...] = ()
    flagged: bool = False
    top: int | None = None
    select: tuple[str, ...] = ()
    json_output: bool = False
    rank: int | None = None  # a distributed run: that rank's own file


def show(path: Path, options: ShowOptions) -> None:
    from .._checks import check_number
    from ..analysis.summary import state, summarize
    from ..render.summary import render_summary, summary_json

    check_number("--top", options.top, integer=True, allow_none=True)
    thresholds = Thresholds.parse(options.thresholds)
    run = read(path, rank=options.rank)
    live = run.live
    if run.rows == 0:
        if options.json_output:
            raise OptionError(state(run, live))
        typer.echo(printable(state(run, live)))
        return
    summary = summarize(run, thresholds, live=live).pick(flagged=options.flagged, top=options.top,
                                                          select=options.select)
    if options.json_output:
        typer.echo(summary_json(summary))
    else:
        render_summary(summary, Console())


def diagnose(path: Path, *, thresholds: Sequence[str], fail_on: str, json_output: bool, rank: int | None = None) -> int:
    """Print the findings; return 1 when one is at least as severe as ``fail_on``."""
    from ..analysis.diagnose import SEVERITIES, diagnose as run_rules, rank as severity_rank

    if fail_on not in (*SEVERITIES, "never"):
        raise OptionError(f"--fail-on must be one of {', '.join(SEVERITIES)}, never; got {fail_on!r}")
    rules = Thresholds.parse(thresholds)
    run = read(path, rank=rank)
    findings = run_rules(run, rules)
    if json_output:
        from ..render.diagnose import findings_json

        typer.echo(findings_json(findings))
    elif run.rows == 0:
        from ..analysis.summary import state

        typer.echo(printable(state(run, run.live)))
    else:
        from ..render.diagnose import render_findings

        render_findings(run, findings, Console(), live=run.live)
    if fail_on != "never" and any(severity_rank(f.severity) >= severity_rank(fail_on) for f in findings):
        return EXIT_FINDINGS
    return 0


def compare(files: Sequence[Path], *, step: str, stats: str, figure: Path | None, top: int | None) -> None:
    from .._checks import check_number
    from ..analysis.compare import compare as compare_runs, parse_stats
    from ..render.compare import render_comparison

    check_number("--top", top, integer=True, allow_none=True)
    runs = [read(path) for path in files]
    comparison = compare_runs(runs, step=step, stats=parse_stats(stats))
    console = Console()
    render_comparison(comparison, console, live=tuple(run.live for run in runs), top=top)
    if figure is not None:
        from ..render.figures import plot_compare

        written = write_figure(lambda: plot_compare(runs, comparison.matching, comparison.choice.rows, figure))
        console.print(f"figure: {written}", highlight=False, markup=False)


def plot(path: Path, out: Path, select: Sequence[str], rank: int | None = None) -> list[Path]:
    from ..render.plots import chosen_columns

    run: Run = read(path, rank=rank)
    columns = chosen_columns(run, select)
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out} is a file; name a folder")
    from ..render.figures import plot_run
    from ..render.training_figures import training_figures

    stem = path.stem + ("" if rank is None else f"-rank{rank}")
    return write_figure(lambda: plot_run(run, columns, out, stem) + training_figures(run, columns, out, stem))


def write_figure(draw: Callable[[], T]) -> T:
    try:
        return draw()
    except OSError as exc:
        raise OptionError(f"cannot write the figure: {exc.strerror or exc}") from None
