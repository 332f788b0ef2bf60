"""Rendering a ``Comparison`` in the terminal with rich: what was matched, and the table of differences."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..analysis.compare import FRACTIONS, Cell, Comparison
from .names import MIN_NAME_WIDTH, shorten
from .text import cell as text_cell
from .text import printable


def _value(stat: str, value: float) -> str:
    if value != value:
        return "nan"
    return f"{100 * value:.1f}%" if stat in FRACTIONS else f"{value:.4g}"


def _change(stat: str, change: float, base: float) -> str:
    if change != change:
        return "nan"
    if stat in FRACTIONS:
        return f"{100 * change:+.1f} pt"
    if base and base == base and stat != "mean":
        return f"{change:+.3g} (×{(base + change) / base:.3g})"
    return f"{change:+.3g}"


def matching_lines(comparison: Comparison) -> list[str]:
    """How every site was matched: the counts, each match by position (with module types), the names
    that were not matched by name because their module types differ, and what was left unmatched."""
    m = comparison.matching
    names = [run.path.name for run in comparison.runs]
    lines = [f"sites matched: {len(m.sites)} ({m.by_name} by name with the same module type, {m.by_position} by "
             "position in the layer graph among sites of the same role)"]
    for site in m.sites:
        if site.how == "position":
            lines.append(f"  by position ({site.role}): " + " ↔ ".join(
                f"{n}:{s} ({t})" for n, s, t in zip(names, site.names, site.module_types)))
    for name, types in m.type_clashes:
        lines.append(f"  same name, different module types (not matched by name): {name} " + " ↔ ".join(types))
    for name, unmatched in zip(names, m.unmatched):
        if unmatched:
            shown = ", ".join(unmatched[:8]) + (f", … ({len(unmatched)} in all)" if len(unmatched) > 8 else "")
            lines.append(f"  not matched in {name}: {shown}")
    return lines


DEFAULT_TOP = 40


def shown_sites(comparison: Comparison, top: int | None) -> tuple[set[str], str | None]:
    """The labels of the sites to show (all, or the ``top`` with the largest change) and a note when cut.
    ``top`` None: all up to ``DEFAULT_TOP`` sites; 0: all."""
    labels = [site.label for site in comparison.matching.sites]
    limit = (DEFAULT_TOP if len(labels) > DEFAULT_TOP else 0) if top is None else top
    if not limit or limit >= len(labels):
        return set(labels), None
    best: dict[str, float] = {}
    for cell in comparison.cells:
        if cell.score == cell.score:
            best[cell.site.label] = max(best.get(cell.site.label, 0.0), cell.score)
    keep = set(sorted(labels, key=lambda label: -best.get(label, 0.0))[:limit])
    return keep, f"showing the {limit} of {len(labels)} sites with the largest changes (--top 0 shows all)"


def render_comparison(comparison: Comparison, console: Console, *, live: tuple[bool, ...] = (),
                      highlight: int = 5, top: int | None = None) -> None:
    runs = comparison.runs
    for k, (run, step) in enumerate(zip(runs, comparison.choice.steps)):
        tag = chr(ord("A") + k) if k < 26 else str(k)
        state = " — still being written" if k < len(live) and live[k] else ""
        console.print(printable(f"{tag}: {run.path} at step {step} ({run.rows} recorded steps){state}"),
                      highlight=False, markup=False)
    for note in comparison.choice.notes:
        console.print(printable(f"note: {note}"), style="yellow", highlight=False, markup=False)
    for line in matching_lines(comparison):
        console.print(printable(line), highlight=False, markup=False, soft_wrap=True)
    if not comparison.matching.sites:
        console.print("nothing to compare: no site could be matched", style="yellow", highlight=False)
        return
    highlighted = {id(cell) for cell in comparison.largest(highlight)}
    table = Table(header_style="bold", title="largest changes in bold red", title_justify="left")
    table.add_column("site", no_wrap=True)
    table.add_column("type")
    table.add_column("match")
    table.add_column("stat")
    tags = [chr(ord("A") + k) for k in range(len(runs))]
    for tag in tags:
        table.add_column(tag, justify="right")
    for tag in tags[1:]:
        table.add_column(f"{tag} − A", justify="right")
    keep, note = shown_sites(comparison, top)
    labels = dict(zip((s.label for s in comparison.matching.sites),
                      shorten([s.label for s in comparison.matching.sites], max(MIN_NAME_WIDTH, console.width // 4))))
    for cell in comparison.cells:
        if cell.site.label in keep:
            table.add_row(*_row(cell, id(cell) in highlighted, labels[cell.site.label]))
    console.print(table)
    if note:
        console.print(note, highlight=False, markup=False)
    if highlighted:
        console.print(printable("largest changes: " + "; ".join(
            f"{c.site.label} {c.stat} {_change(c.stat, max(c.changes, key=lambda v: abs(v) if v == v else -1), c.values[0])}"
            for c in comparison.largest(highlight))), highlight=False, markup=False)


def _row(cell: Cell, highlighted: bool, label: str) -> list[str | Text]:
    style = "bold red" if highlighted else ""
    values = [_value(cell.stat, v) for v in cell.values]
    changes = [Text(_change(cell.stat, c, cell.values[0]), style=style) for c in cell.changes]
    return [text_cell(label), text_cell(cell.site.module_type), cell.site.how, cell.stat, *values, *changes]
