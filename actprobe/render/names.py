"""Site names that fit a column: whole when they fit, else shortened from the left, keeping the
part that tells a site from the others (``encoder.layers.encoder_layer_3.mlp.0`` →
``…encoder_layer_3.mlp.0``), never cut at the end where the names differ."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

ELLIPSIS = "…"
MIN_NAME_WIDTH = 24  # a site column is never made narrower than this


def _suffixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[k:]) for k in range(len(parts))]


def shorten(names: Sequence[str], width: int) -> list[str]:
    """Each name as it is if it has at most ``width`` characters; else ``…`` and its longest dotted tail
    that fits and that no other name ends with; else that unique tail's first part, ``…`` and the end."""
    counts = Counter(tail for name in set(names) for tail in set(_suffixes(name)))
    short = [name if len(name) <= width else _short(name, width, counts) for name in names]
    clashes = Counter(short)
    return [_around_difference(name, [n for n, s in zip(names, short) if s == text and n != name], width)
            if clashes[text] > 1 and text != name else text for name, text in zip(names, short)]


def _around_difference(name: str, others: Sequence[str], width: int) -> str:
    """``name`` cut to ``width`` around the first character where it differs from ``others``."""
    if not others:
        return name
    differs = min(next((k for k, (a, b) in enumerate(zip(name, other)) if a != b), min(len(name), len(other)))
                  for other in others)
    start = max(0, min(differs - (width - 2) // 2, len(name) - (width - 2)))
    text = name[start:start + width - 2]
    return (ELLIPSIS if start > 0 else "") + text + (ELLIPSIS if start + len(text) < len(name) else "")


def _short(name: str, width: int, counts: Counter[str]) -> str:
    unique = [tail for tail in _suffixes(name)[1:] if counts[tail] == 1]
    for tail in unique:
        if len(tail) + 1 <= width:
            return ELLIPSIS + tail
    shortest = unique[-1] if unique else name
    head = shortest.split(".")[0]
    room = width - len(head) - 2
    if room >= 4:
        return f"{ELLIPSIS}{head}{ELLIPSIS}{shortest[-room:]}" if head != shortest else ELLIPSIS + name[-(width - 1):]
    return ELLIPSIS + name[-(width - 1):]
