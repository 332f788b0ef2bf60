"""The ``actprobe`` command line: typer commands (``app``), ``actprobe run``'s model files and runner,
``actprobe recipe``'s driver, and the exit codes.

Owns: parsing arguments, turning known errors into one ``error:`` line and an exit code
(``codes``), loading model files (``modelfile``), making a model file's batches and steps
(``model_steps``), running it with a probe (``runner``), and the two long commands
(``run_command``, ``recipe_command``).

May import: every layer below it (engine, stats, runfile, analysis, render, training, recipes,
datasets) and typer and rich. Nothing imports the CLI.
"""

from typing import Any

from . import app as _app_module
from .app import app, main

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    # actprobe 0.1's ``actprobe.cli`` was one module: its command functions (``show``, ``info``, …) live on
    try:
        return getattr(_app_module, name)
    except AttributeError:
        raise AttributeError(f"module 'actprobe.cli' has no attribute {name!r}") from None
