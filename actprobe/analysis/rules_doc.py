"""The rules and thresholds tables in words: docs/DIAGNOSE.md's tables and ``show``'s legend are made
here from ``rules.RULES`` and ``Thresholds``, so that the documentation cannot drift from the code."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

from .rules import RULES
from .thresholds import Thresholds


def _names() -> list[str]:
    return [f.name for f in fields(Thresholds)]


def rules_markdown() -> str:
    """The rules table of docs/DIAGNOSE.md: rule, when it fires (thresholds by name), severity, advice."""
    lines = ["| rule | fires when | severity | advice, in short |", "|---|---|---|---|"]
    for rule in RULES:
        when = rule.fires_when.format(**{name: f"`{name}`" for name in _names()})
        lines.append(f"| `{rule.name}` | {when} | {rule.severity} | {rule.advice} |")
    return "\n".join(lines)


def thresholds_markdown() -> str:
    """The thresholds table of docs/DIAGNOSE.md: name, default, the rules that use it, its meaning."""
    lines = ["| threshold | default | used by | meaning |", "|---|---|---|---|"]
    for f in fields(Thresholds):
        lines.append(f"| `{f.name}` | {f.default} | {f.metadata['rules']} | {f.metadata['meaning']} |")
    return "\n".join(lines)


def legend(rule_names: Iterable[str], thresholds: Thresholds) -> list[str]:
    """One line per rule in ``rule_names`` (in rule order): when it fires, with these thresholds' values."""
    wanted = set(rule_names)
    values = {name: f"{getattr(thresholds, name):g}" for name in _names()}
    return [f"{rule.name} ({rule.severity}): {rule.fires_when.format(**values).replace('`', '')}"
            for rule in RULES if rule.name in wanted]


GENERATED = ("<!-- generated from actprobe.analysis.rules.RULES", "<!-- generated from actprobe.analysis.thresholds")


def update_doc(text: str) -> str:
    """``text`` (docs/DIAGNOSE.md) with the table after each ``GENERATED`` marker made anew."""
    lines, out, k = text.splitlines(), [], 0
    tables = {GENERATED[0]: rules_markdown(), GENERATED[1]: thresholds_markdown()}
    while k < len(lines):
        out.append(lines[k])
        marker = next((m for m in GENERATED if lines[k].startswith(m)), None)
        k += 1
        if marker is not None:
            out.append(tables[marker])
            while k < len(lines) and lines[k].startswith("|"):
                k += 1
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python -m actprobe.analysis.rules_doc docs/DIAGNOSE.md
    import sys
    from pathlib import Path

    doc = Path(sys.argv[1])
    doc.write_text(update_doc(doc.read_text()))
