"""The one validator of numeric options, shared by the API, the CLI and the recipes.

Every message reads ``<name> must be <what>, got <value>``; ``name`` is what the user typed
(``every`` for the API, ``--every`` for the CLI).
"""

from __future__ import annotations

import math
import sys

from .errors import OptionError

MAX_INTEGER = 2 ** 62  # the largest whole-number option


def check_number(name: str, value: object, *, integer: bool = False, minimum: float = 0.0,
                 strict: bool = False, allow_inf: bool = False, allow_none: bool = False) -> None:
    """Raise ``OptionError`` unless ``value`` is a number (bools excluded) in the allowed range.

    Args:
        name: the option as the user wrote it, used in the message.
        integer: an ``int`` is required.
        minimum: the lower bound; ``strict`` makes it exclusive.
        allow_inf: accept +inf (never NaN).
        allow_none: accept ``None`` (an option left unset).
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        ok = False
    elif isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and not allow_inf)):
        ok = False
    else:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        none = allow_none and not name.startswith("--")  # a command-line flag is never None
        raise OptionError(f"{name} must be {_describe(integer, minimum, strict, none)}, got {value!r}")
    # the probe keeps its options in 64-bit fields (a C int64, a float64)
    if integer and value is not None and value > MAX_INTEGER:
        raise OptionError(f"{name} must be at most 2**62, got {value!r}")
    if not integer and isinstance(value, int) and abs(value) > sys.float_info.max:
        raise OptionError(f"{name} must be a number within float64's range, got {value!r}")


def _describe(integer: bool, minimum: float, strict: bool, allow_none: bool) -> str:
    kind = "integer" if integer else "number"
    if (minimum == 0 and strict) or (integer and minimum == 1 and not strict):
        text = f"a positive {kind}"
    elif minimum == 0:
        text = "0 or a positive integer" if integer else f"a non-negative {kind}"
    else:
        text = f"a {kind} {'>' if strict else '≥'} {minimum:g}"
    return text + (" or None" if allow_none else "")


def positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    """``value`` is an int ≥ 1 (or None with ``allow_none``)."""
    check_number(name, value, integer=True, minimum=1, allow_none=allow_none)


def non_negative(name: str, value: object, *, allow_inf: bool = False) -> None:
    """``value`` is a finite number ≥ 0 (+inf too with ``allow_inf``)."""
    check_number(name, value, minimum=0.0, allow_inf=allow_inf)
