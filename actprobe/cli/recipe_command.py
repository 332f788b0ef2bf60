"""``actprobe recipe NAME``: run a recipe with progress in the terminal and say where its outputs are."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ..datasets import use_data_root
from ..recipes import Context, RecipeOptions, find, run_recipe
from ..render.progress import ProgressDisplay
from ..render.tables import to_rich
from ..training import resolve_device
from .codes import EXIT_INTERRUPTED, EXIT_OK


def execute(name: str, options: RecipeOptions, data_root: Path | None, console: Console) -> int:
    """Run recipe ``name``, print its tables; return the exit code (0, or 130 on Ctrl-C).

    Raises:
        ActprobeError: bad options, missing data, or a failure while recording.
    """
    find(name)  # an unknown name fails before the device is looked at
    device = resolve_device(options.device)
    progress = ProgressDisplay(console, refresh_s=0.25, details=False, transient=True, terminal_only=True)
    def say(line: str, *, bold: bool = False) -> None:
        console.print(line, style="bold" if bold else None, highlight=False, markup=False)

    ctx = Context(options=options, device=device, data_root=data_root, progress=progress, say=say)
    console.print(f"recipe {name} on {device} → {options.out_dir}/", highlight=False, markup=False)
    try:
        with use_data_root(data_root):
            result = run_recipe(name, ctx)
    except KeyboardInterrupt:
        console.print(f"interrupted: finished configurations are kept in {options.out_dir}/ and are reused "
                      "when the recipe runs again", style="yellow", highlight=False, markup=False)
        return EXIT_INTERRUPTED
    for table in result.tables:
        console.print(to_rich(table))
    console.print(f"{len(result.runs)} run files, {len(result.figures)} figures; summary: {result.markdown}",
                  highlight=False, markup=False)
    return EXIT_OK
