"""Turning exceptions into the one-line messages that the CLI and reports print."""

from __future__ import annotations

MAX_CHARS = 200


def one_line(exc: BaseException, *, with_type: bool = False, limit: int = MAX_CHARS) -> str:
    """``exc``'s message on one line, shortened to ``limit`` characters; its type name when empty."""
    text = " ".join(str(exc).split())
    if with_type or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
