"""Result tables of the recipes, printed with rich and written as Markdown; no computation here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Table:
    """A titled table of text cells; ``notes`` are printed under it."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = field(default=())


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> Table:
    return Table(title, tuple(columns), tuple(tuple(r) for r in rows), tuple(notes))


def to_markdown(t: Table, *, title: bool = True) -> str:
    lines = ([f"**{t.title}**", ""] if title else []) + ["| " + " | ".join(t.columns) + " |",
                                                           "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in t.rows]
    lines += [""] + [f"{note}  " for note in t.notes] if t.notes else []
    return "\n".join(lines) + "\n"


def to_rich(t: Table) -> object:
    from rich.table import Table as RichTable

    rich_table = RichTable(title=t.title, title_justify="left", caption="\n".join(t.notes) or None,
                           caption_justify="left")
    for i, column in enumerate(t.columns):
        numeric = i > 0 and all(_numeric(row[i]) for row in t.rows)
        rich_table.add_column(column, justify="right" if numeric else "left")
    for row in t.rows:
        rich_table.add_row(*row)
    return rich_table


def _numeric(cell: str) -> bool:
    return not cell or cell[0] in "0123456789+-−—×."


def fmt(value: float, digits: int = 3) -> str:
    """A number for a table: ``—`` for NaN."""
    return "—" if value != value else f"{value:.{digits}f}"


def pct(value: float, digits: int = 0) -> str:
    return "—" if value != value else f"{100 * value:.{digits}f}%"
