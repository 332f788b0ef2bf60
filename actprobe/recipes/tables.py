"""Result tables of the recipes, written as Markdown (``render.tables`` draws them in the terminal)."""

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


def fmt(value: float, digits: int = 3) -> str:
    """A number for a table: ``—`` for NaN."""
    return "—" if value != value else f"{value:.{digits}f}"


def pct(value: float, digits: int = 0) -> str:
    return "—" if value != value else f"{100 * value:.{digits}f}%"
