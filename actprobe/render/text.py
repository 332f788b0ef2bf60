"""Strings that come from a run file, made safe to show: no control characters reach the terminal,
and nothing in them is read as rich markup or matplotlib mathtext."""

from __future__ import annotations

import unicodedata

from rich.text import Text


def printable(value: object) -> str:
    """``value`` as text with every control or format character written as an escape (``\\x1b``,
    ``\\u202e``), so that a file cannot move the cursor, recolour the terminal or reverse text."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def cell(value: object, style: str = "") -> Text:
    """A table cell shown verbatim: ``[logits]`` stays ``[logits]``, never markup."""
    return Text(printable(value), style=style)


def figure_label(value: object) -> str:
    """A label for matplotlib: printable, with ``$`` escaped so that it is never read as mathtext."""
    return printable(value).replace("$", r"\$")


def _escape(ch: str) -> str:
    code = ord(ch)
    if unicodedata.category(ch) in ("Zl", "Zp") or code < 0x100:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
