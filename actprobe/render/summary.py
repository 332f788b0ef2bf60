"""The run summary of ``actprobe show`` and ``actprobe run`` in the terminal, with rich, and as JSON."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from ..analysis.rules import SEVERITIES, Observation, percent
from ..analysis.rules_doc import legend
from ..analysis.summary import RunSummary, summarize
from ..analysis.thresholds import Thresholds
from ..runfile.reader import Run, read
from .names import MIN_NAME_WIDTH, shorten
from .tables import FixedTable, fix_widths, natural_widths
from .text import cell, printable

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
FIRST_OR_LAST = frozenset({"mean-shift", "saturation"})  # rules that look at the first and the last row


def _number(value: float) -> str:
    return f"{value:.3g}" if value == value else "nan"


def _pair(first: str, last: str, single: bool, arrow: str = " → ") -> str:
    return first if single else f"{first}{arrow}{last}"


def _flag_text(observations: tuple[Observation, ...], summary: RunSummary) -> Text:
    text = Text()
    for k, obs in enumerate(observations):
        if k:
            text.append(", ")
        when = ""
        # "(first)"/"(last)": only at that row (a saturation grown out of says "at init" itself)
        if obs.rule in FIRST_OR_LAST and summary.rows > 1 and len(obs.steps) == 1 and "kind" not in obs.evidence:
            when = " (first)" if obs.steps[0] == summary.first_step else " (last)"
        text.append(printable(obs.detail) + when, style=STYLE[obs.severity])
    return text


def _rows(summary: RunSummary, names: list[str], arrow: str) -> list[list[Text]]:
    single = summary.rows == 1
    rows = []
    for name, site in zip(names, summary.sites):
        rows.append([
            cell(name), cell(site.module_type),
            # Text, not str: a plain string would be parsed for markup and highlighted, cell by cell
            *(Text(_pair(_number(site.first[stat]), _number(site.last[stat]), single, arrow))
              for stat in ("mean", "std") + (("grad_std",) if summary.grads else ())),
            *(Text(_pair(percent(site.first[stat]), percent(site.last[stat]), single, arrow))
              for stat in ("near_zero", "dead")),
            _flag_text(site.observations, summary),
        ])
    return rows


def summary_table(summary: RunSummary, width: int = 120) -> Table | FixedTable:
    """One row per site shown: module type, mean, std, near-zero and dead at the first → last recorded
    step, and what the rules observed there. Names are shortened to fit ``width`` columns."""
    single = summary.rows == 1
    steps = f"step {summary.first_step}" if single else f"step {summary.first_step} → {summary.last_step}"
    table = Table(title=f"activations, {steps}", title_justify="left", header_style="bold")
    names = shorten([s.name for s in summary.sites], max(MIN_NAME_WIDTH, width // 4))
    table.add_column("site", no_wrap=True, min_width=min(max(map(len, names), default=4), width // 2))
    columns = ("module", "mean", "std") + (("grad std",) if summary.grads else ()) + ("near-zero", "dead", "flags")
    for name in columns:
        # narrow terminals wrap a cell onto more lines; a number or a name is never cut short
        table.add_column(name, justify="left" if name in ("module", "flags") else "right", overflow="fold")
    rows = _rows(summary, names, " → ")
    measured = natural_widths(table, rows)
    if measured is not None and measured[1] > width:  # a narrow terminal: "a→b" if that makes the table fit
        compact = _rows(summary, names, "→")
        fitting = natural_widths(table, compact)
        if fitting is not None and fitting[1] <= width:
            rows = compact  # (else rich wraps the cells, at the spaces around the arrows)
    if fix_widths(table, rows, width) and FixedTable.supports(table):
        return FixedTable(table, rows)
    for row in rows:
        table.add_row(*row)
    return table


def _header(summary: RunSummary, data_line: bool) -> list[str]:
    attrs = summary.attrs
    lines = [f"{summary.path}: {summary.rows} recorded steps ({summary.first_step}..{summary.last_step}), "
             f"{summary.total_sites} sites, {summary.seconds:.1f} s"
             + (" — still being written" if summary.live else "")
             + (" — its writer stopped without closing it (a crash or a write error); these are its "
                "committed rows" if summary.stopped else "")]
    if summary.ranks:
        lines.append(f"distributed run: the global batch of {summary.ranks} ranks (segment {attrs.get('segment', 0)}), "
                     "merged from their files; --rank R shows one rank's own statistics")
    elif "rank" in attrs:
        lines.append(f"rank {attrs['rank']} of a distributed run of {attrs.get('world_size')} processes: this "
                     "rank's values only (its folder reads as the global batch)")
    lines += [f"note: {note}" for note in summary.notes]
    context = [f"{key} {attrs[key]}" for key in ("model_file", "mode", "device", "seed") if key in attrs]
    if context:
        lines.append(", ".join(context))
    if data_line and "data_source" in attrs:
        lines.append(f"data: {attrs['data_source']}")
    for name in summary.scalars_first:
        lines.append(f"{name}: {_number(summary.scalars_first[name])} at step {summary.first_step} → "
                     f"{_number(summary.scalars_last[name])} at step {summary.last_step}")
    return lines


def verdict_line(summary: RunSummary) -> tuple[str, str]:
    """The counts line under the table and its style: errors, warnings, and how many sites they touch."""
    counts = summary.counts()
    judged = {o.column for o in summary.observations if o.severity != "info"}
    touched = len({c for c in judged if c < summary.total_sites})
    parameters = len(judged) - touched
    places = ([f"{touched} of {summary.total_sites} sites"] if touched or not parameters else []) + (
        [f"{parameters} parameter{'s' if parameters != 1 else ''}"] if parameters else [])
    where = " and ".join(places)
    info = f"{counts['info']} info" if counts["info"] else ""
    if not counts["error"] and not counts["warning"]:
        return "no warnings or errors" + (f" ({info})" if info else ""), "green"
    parts = [f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}" for s in reversed(SEVERITIES[1:]) if counts[s]]
    return (f"{', '.join(parts)} at {where}" + (f"; {info}" if info else ""),
            "bold red" if counts["error"] else "yellow")


def render_summary(summary: RunSummary, console: Console, *, data_line: bool = True) -> None:
    """Print the header lines, the site table, the verdict and the legend of the rules that fired."""
    for line in _header(summary, data_line):
        console.print(printable(line), highlight=False, markup=False)
    console.print(summary_table(summary, console.width))
    if len(summary.sites) < summary.total_sites:
        console.print(f"showing {len(summary.sites)} of {summary.total_sites} sites", highlight=False)
    for parameter in summary.parameters:
        line = Text(printable(f"parameter {parameter.name}: "))
        for k, obs in enumerate(parameter.observations):
            line.append((", " if k else "") + printable(obs.detail), style=STYLE[obs.severity])
        console.print(line)
    text, style = verdict_line(summary)
    console.print(text, style=style, highlight=False)
    fired = dict.fromkeys(o.rule for o in summary.observations)
    for line in legend(fired, summary.thresholds):
        console.print(printable(line), highlight=False, markup=False, style="dim", soft_wrap=True)
    if summary.uncalled:
        shown = ", ".join(summary.uncalled[:6]) + (f", … ({len(summary.uncalled)} in all)"
                                                   if len(summary.uncalled) > 6 else "")
        console.print(printable(f"modules not called in the first recorded step (no site): {shown}"),
                      highlight=False, markup=False, style="dim", soft_wrap=True)


def summary_json(summary: RunSummary) -> str:
    return json.dumps(summary.to_json(), indent=2, ensure_ascii=False, default=_plain)


def _plain(value: Any) -> Any:
    return float(value) if hasattr(value, "__float__") else str(value)


class SummaryReport:
    """A run's summary for scripts and notebooks: ``print(actprobe.summary("run.h5"))``, or the last
    value of a notebook cell; ``.data`` is the ``RunSummary``, ``.json()`` the JSON text."""

    def __init__(self, data: RunSummary, width: int = 120) -> None:
        self.data, self.width = data, width

    def json(self) -> str:
        return summary_json(self.data)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        buffer = Console(file=io.StringIO(), width=options.max_width, force_terminal=console.is_terminal,
                         color_system=console.color_system)
        render_summary(self.data, buffer)
        yield Text.from_ansi(buffer.file.getvalue())  # type: ignore[attr-defined]

    def __str__(self) -> str:
        buffer = Console(file=io.StringIO(), width=self.width, color_system=None)
        render_summary(self.data, buffer)
        return buffer.file.getvalue()  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        """Jupyter's display: the same table, colours kept, as HTML."""
        console = Console(file=io.StringIO(), width=self.width, record=True, force_terminal=True)
        render_summary(self.data, console)
        return console.export_html(inline_styles=True, code_format="<pre style=\"font-size:12px\">{code}</pre>")

    __repr__ = __str__


def summary(source: str | os.PathLike[str] | Run, thresholds: Thresholds | None = None, *, flagged: bool = False,
            top: int | None = None, select: str | Sequence[str] = ()) -> SummaryReport:
    """The summary that ``actprobe show`` prints, for scripts and notebooks.

    Args:
        source: a run file's path, or a ``Run`` from ``actprobe.read``.
        thresholds: the rules' thresholds (``actprobe.analysis.thresholds.Thresholds``).
        flagged, top, select: which sites to show, as ``show --flagged/--top/--select``.

    Raises:
        FormatError: the file cannot be read; OptionError: it has no rows, or ``select`` matches nothing.
    """
    run = source if isinstance(source, Run) else read(source)
    data = summarize(run, thresholds, live=run.live)
    return SummaryReport(data.pick(flagged=flagged, top=top, select=select))
