"""Result tables (``recipes.tables.Table``) drawn as rich tables."""

from __future__ import annotations

from typing import Protocol

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
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


def natural_widths(table: RichTable, cells: list[list[Text]]) -> tuple[list[int], int] | None:
    """Each column's natural width (its widest single-line cell or header) and the whole table's, with
    (0, 1) padding and borders; None when a cell has several lines."""
    if any("\n" in c.plain for row in cells for c in row):
        return None
    natural = []
    for index, column in enumerate(table.columns):
        header = cell_len(str(column.header))
        longest = max((cell_len(row[index].plain) for row in cells), default=0)
        natural.append(max(header, longest, column.min_width or 0, 1))
    padding = 2 * len(natural)  # (0, 1) padding: one cell either side of each column's text
    borders = len(natural) + 1 if table.box and table.show_edge else len(natural) - 1
    return natural, sum(natural) + padding + borders


def fix_widths(table: RichTable, cells: list[list[Text]], width: int) -> bool:
    """Give each column of ``table`` its natural width when the whole table fits in ``width``.

    rich measures every cell of a column whose width is not set (three renderings each): 0.2 s for a
    500-row table. Single-line cells are measured here as their text's length instead; the table
    looks the same. A table too wide for ``width`` is left to rich, which wraps its cells. Returns
    whether the widths were set.
    """
    measured = natural_widths(table, cells)
    if measured is None or measured[1] > width:
        return False
    for column, natural_width in zip(table.columns, measured[0]):
        column.width = natural_width
    return True


class FixedTable:
    """A table whose columns have fixed widths (``fix_widths``) and whose cells are single-line ``Text``,
    drawn as rich draws it, for less: rich renders every cell through its layout machinery (the 3,500
    cells of a 500-site summary were most of ``show``'s drawing time), this joins the cells' own
    segments. The title, the header and the borders come from rich itself (the table rendered
    without its rows); tests compare the output with rich's, styles included. A table this class does
    not know how to draw (another box, lines between rows, row styles, a caption) is drawn by rich."""

    def __init__(self, table: RichTable, cells: list[list[Text]]) -> None:
        self.table, self.cells = table, cells

    @staticmethod
    def supports(table: RichTable) -> bool:
        return (table.box is box.HEAVY_HEAD and table.show_header and table.show_edge and not table.show_lines
                and not table.show_footer and not table.row_styles and not table.caption and not table.leading
                and table.padding == (0, 1, 0, 1) and table.style in ("", "none") and not table.border_style
                and all(c.width is not None and not c.style and c.vertical == "top" for c in table.columns))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = list(Segment.split_lines(console.render(self.table, options)))  # no rows: title, header, borders
        *head, bottom = lines
        chars = self.table.box.substitute(options, safe=self.table.safe_box if self.table.safe_box is not None
                                          else console.safe_box)
        new_line = Segment.line()
        for line in head:
            yield from line
            yield new_line
        widths = [column.width or 0 for column in self.table.columns]
        justify = [column.justify for column in self.table.columns]
        pad = Segment(" ")
        for index, row in enumerate(self.cells):
            last = index == len(self.cells) - 1
            left, divider, right = ((chars.foot_left, chars.foot_vertical, chars.foot_right) if last
                                    else (chars.mid_left, chars.mid_vertical, chars.mid_right))
            yield Segment(left)
            for k, (text, width) in enumerate(zip(row, widths)):
                if k:
                    yield Segment(divider)
                line = text.copy()
                room = width - cell_len(line.plain)
                if justify[k] == "right":
                    line.pad_left(room)
                else:
                    line.pad_right(room)
                yield pad
                yield from line.render(console, end="")
                yield pad
            yield Segment(right)
            yield new_line
        yield from bottom
        yield new_line
