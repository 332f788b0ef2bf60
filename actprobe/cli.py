"""The ``actprobe`` command line. Commands are thin: parse, call the library, report errors in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ._version import __version__
from .errors import ActprobeError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="actprobe: per-layer activation statistics of PyTorch models.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"actprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


@app.command()
def info(path: Path = typer.Argument(..., help="A run file written by actprobe.")) -> None:
    """Print a run file's attributes, sites and row count."""
    from .reader import read

    try:
        run = read(path)
    except ActprobeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{run.path}: format_version {run.format_version}, {run.rows} rows, {len(run.sites)} sites")
    if run.rows:
        typer.echo(f"steps {int(run.step[0])}..{int(run.step[-1])}, {run.time[-1]:.1f} s")
    for key in sorted(run.attrs):
        typer.echo(f"  {key} = {run.attrs[key]}")
    for name, kind in zip(run.sites, run.site_module_types):
        typer.echo(f"  site {name} ({kind})")
    if run.scalars:
        typer.echo(f"  scalars: {', '.join(run.scalars)}")


def main() -> None:
    app(prog_name="actprobe")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
