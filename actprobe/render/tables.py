"""Result tables (``recipes.tables.Table``) drawn as rich tables."""

from __future__ import annotations

from typing import Protocol

from rich.cells import cell_len
from rich.table import Table as RichTable
from rich.text import Text


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


def fix_widths(table: RichTable, cells: list[list[Text]], width: int) -> None:
    """Give each column of ``table`` its natural width when the whole table fits in ``width``.

    rich measures every cell of a column whose width is not set (three renderings each): 0.2 s for a
    500-row table. Single-line cells are measured here as their text's length instead; the table
    looks the same. A table too wide for ``width`` is left to rich, which wraps its cells.
    """
    if any("\n" in c.plain for row in cells for c in row):
        return
    natural = []
    for index, column in enumerate(table.columns):
        header = cell_len(str(column.header))
        longest = max((cell_len(row[index].plain) for row in cells), default=0)
        natural.append(max(header, longest, column.min_width or 0, 1))
    padding = 2 * len(natural)  # (0, 1) padding: one cell either side of each column's text
    borders = len(natural) + 1 if table.box and table.show_edge else len(natural) - 1
    if sum(natural) + padding + borders > width:
        return
    for column, natural_width in zip(table.columns, natural):
        column.width = natural_width
