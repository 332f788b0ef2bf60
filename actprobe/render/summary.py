"""The run summary of ``actprobe show`` and ``actprobe run`` in the terminal, with rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..analysis.summary import Flag, RunSummary, Thresholds
from .text import cell, printable

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow"}


def _number(value: float) -> str:
    return f"{value:.3g}" if value == value else "nan"


def _percent(value: float) -> str:
    if value != value:
        return "nan"
    if 0 < value < 0.005:
        return "<1%"
    return f"{value:.0%}"


def _pair(first: str, last: str, single: bool) -> str:
    return first if single else f"{first} → {last}"


def _flag_text(flags: tuple[Flag, ...]) -> Text:
    text = Text()
    for k, flag in enumerate(flags):
        if k:
            text.append(", ")
        suffix = "" if flag.when == "both" else f" ({flag.when})"
        text.append(flag.detail + suffix, style=_SEVERITY_STYLE[flag.severity])
    return text


def summary_table(summary: RunSummary) -> Table:
    """One row per site: module type, mean, std, near-zero and dead at the first → last recorded step."""
    single = summary.rows == 1
    steps = f"step {summary.first_step}" if single else f"step {summary.first_step} → {summary.last_step}"
    table = Table(title=f"activations, {steps}", title_justify="left", header_style="bold")
    for name in ("site", "module", "mean", "std", "near-zero", "dead", "flags"):
        table.add_column(name, justify="left" if name in ("site", "module", "flags") else "right")
    for site in summary.sites:
        table.add_row(
            cell(site.name), cell(site.module_type),
            _pair(_number(site.first["mean"]), _number(site.last["mean"]), single),
            _pair(_number(site.first["std"]), _number(site.last["std"]), single),
            _pair(_percent(site.first["near_zero"]), _percent(site.last["near_zero"]), single),
            _pair(_percent(site.first["dead"]), _percent(site.last["dead"]), single),
            _flag_text(site.flags),
        )
    return table


def _header(summary: RunSummary, data_line: bool) -> list[str]:
    attrs = summary.attrs
    lines = [f"{summary.path}: {summary.rows} recorded steps ({summary.first_step}..{summary.last_step}), "
             f"{len(summary.sites)} sites, {summary.seconds:.1f} s"
             + (" — still being written" if summary.live else "")
             + (" — its writer stopped without closing it (a crash or a write error); these are its "
                "committed rows" if summary.stopped else "")]
    context = [f"{key} {attrs[key]}" for key in ("model_file", "mode", "device", "seed") if key in attrs]
    if context:
        lines.append(", ".join(context))
    if data_line and "data_source" in attrs:
        lines.append(f"data: {attrs['data_source']}")
    for name in summary.scalars_first:
        lines.append(f"{name}: {_number(summary.scalars_first[name])} at step {summary.first_step} → "
                     f"{_number(summary.scalars_last[name])} at step {summary.last_step}")
    return lines


def legend(thresholds: Thresholds) -> str:
    return (f"flags: std ×r = std relative to the first site (below ×{thresholds.collapse:g} or above "
            f"×{thresholds.explosion:g}); mean kσ after a ReLU-like module (|k| > {thresholds.mean_shift:g}); "
            f"near-zero > {thresholds.near_zero:.0%}; dead > {thresholds.dead:.0%}; any NaN/Inf. "
            "(first)/(last): only at that step.")


def render_summary(summary: RunSummary, console: Console, thresholds: Thresholds | None = None, *,
                   data_line: bool = True) -> None:
    """Print the header lines, the site table and the flag count (``data_line``: say what the data was)."""
    for line in _header(summary, data_line):
        console.print(printable(line), highlight=False, markup=False)
    console.print(summary_table(summary))
    flagged = sum(1 for site in summary.sites if site.flags)
    if flagged:
        console.print(f"{summary.flag_count} flags at {flagged} of {len(summary.sites)} sites", style="yellow",
                      highlight=False)
        console.print(legend(thresholds or Thresholds()), highlight=False, markup=False)
    else:
        console.print("no flags", style="green", highlight=False)
