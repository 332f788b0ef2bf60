"""What ``actprobe info`` prints: a run file's row count, attributes, sites and scalars, one per line."""

from __future__ import annotations

from ..runfile.reader import Run
from .text import printable


def info_lines(run: Run) -> list[str]:
    """The lines of ``actprobe info``; attribute values and names come from the file, so every line
    passes through ``printable`` (no escape sequence reaches the terminal)."""
    lines = [f"{run.path}: format_version {run.format_version}, {run.rows} rows, {len(run.sites)} sites"]
    if run.rows:
        lines.append(f"steps {int(run.step[0])}..{int(run.step[-1])}, {run.time[-1]:.1f} s")
    if run.distributed:
        lines.append(f"distributed run of {len(run.ranks)} ranks: " + ", ".join(
            f"rank {r.attrs.get('rank')} {r.rows} rows" + ("" if r.closed else " (not closed)") for r in run.ranks))
    lines += [f"note: {note}" for note in run.notes]
    lines += [f"  {key} = {run.attrs[key]}" for key in sorted(run.attrs)]
    lines += [f"  site {name} ({kind})" for name, kind in zip(run.sites, run.site_module_types)]
    if run.scalars:
        lines.append(f"  scalars: {', '.join(run.scalars)}")
    return [printable(line) for line in lines]
