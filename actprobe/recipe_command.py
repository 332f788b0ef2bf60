"""``actprobe recipe NAME``: run a recipe with progress in the terminal and say where its outputs are."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .datasets import use_data_root
from .recipes import Context, RecipeOptions, find, run_recipe
from .recipes.progress import RecipeProgress
from .runner import resolve_device

EXIT_INTERRUPTED = 130


def execute(name: str, options: RecipeOptions, data_root: Path | None, console: Console) -> int:
    """Run recipe ``name``; return the exit code (0, or 130 on Ctrl-C).

    Raises:
        ActprobeError: bad options, missing data, or a failure while recording.
    """
    find(name)  # an unknown name fails before the device is looked at
    device = resolve_device(options.device)
    ctx = Context(options=options, device=device, data_root=data_root, progress=RecipeProgress(console))
    console.print(f"recipe {name} on {device} → {options.out_dir}/", highlight=False, markup=False)
    try:
        with use_data_root(data_root):
            result = run_recipe(name, ctx, console)
    except KeyboardInterrupt:
        console.print(f"interrupted: finished configurations are kept in {options.out_dir}/ and are reused "
                      "when the recipe runs again", style="yellow", highlight=False, markup=False)
        return EXIT_INTERRUPTED
    console.print(f"{len(result.runs)} run files, {len(result.figures)} figures; summary: {result.markdown}",
                  highlight=False, markup=False)
    return 0
