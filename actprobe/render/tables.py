"""Result tables (``recipes.tables.Table``) drawn as rich tables."""

from __future__ import annotations

from typing import Protocol

from rich.table import Table as RichTable


class TextTable(Protocol):
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...]


def to_rich(t: TextTable) -> RichTable:
    """A rich table of ``t``: numeric columns right-aligned, the notes as its caption."""
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
