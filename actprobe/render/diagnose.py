"""Rendering diagnose findings in the terminal with rich, and as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from ..analysis.diagnose import SEVERITIES, Finding
from ..runfile.reader import Run
from .text import printable

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def findings_json(findings: Sequence[Finding]) -> str:
    return json.dumps([f.to_json() for f in findings], indent=2, ensure_ascii=False)


def _sites(sites: Sequence[str]) -> str:
    return ", ".join(sites[:5]) + (f", … ({len(sites)} sites)" if len(sites) > 5 else "")


def render_findings(run: Run, findings: Sequence[Finding], console: Console, *, live: bool = False) -> None:
    state = " — still being written" if live else ""
    console.print(printable(f"{run.path}: {run.rows} recorded steps ({int(run.step[0]) if run.rows else '-'}.."
                            f"{int(run.step[-1]) if run.rows else '-'}), {len(run.sites)} sites{state}"),
                  highlight=False, markup=False)
    if not findings:
        console.print("no findings: no rule fired", style="green", highlight=False)
        return
    for f in findings:
        console.print(Text.assemble((f.severity.upper(), STYLE[f.severity]), " ", (f.rule, "bold"),
                                    " — " + printable(_sites(f.sites))), highlight=False)
        console.print(printable(f"  {f.message}"), highlight=False, markup=False)
        console.print(printable(f"  → {f.advice}"), highlight=False, markup=False, style="dim")
    counts = {s: sum(f.severity == s for f in findings) for s in reversed(SEVERITIES)}
    console.print(", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items()), highlight=False)
