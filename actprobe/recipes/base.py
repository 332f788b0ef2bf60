"""What every recipe gets (``Context``) and gives back (``RecipeResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..training import Progress
from .options import RecipeOptions
from .tables import Table

class Say(Protocol):
    """Prints one line of plain text to the user (``bold`` for a heading)."""

    def __call__(self, line: str, *, bold: bool = False) -> None: ...


@dataclass
class Context:
    """A recipe's options, resolved device, data root, and where progress and messages go.

    ``progress`` draws a bar per configuration (the training loop drives it); ``say`` prints a line;
    either may be None for silence.
    """

    options: RecipeOptions
    device: torch.device
    data_root: Any = None
    progress: Progress | None = None
    say: Say | None = None

    def out(self, recipe: str) -> Path:
        return self.options.out_dir / recipe

    def done(self, label: str, text: str, seconds: float | None) -> None:
        """Say that configuration ``label`` has finished (``seconds`` None: its file was reused)."""
        if self.say is None:
            return
        timing = " (reused)" if seconds is None else f" ({seconds:.0f} s)" if seconds >= 1 else ""
        self.say(f"  ✓ {label}{': ' + text if text else ''}{timing}")


@dataclass
class RecipeResult:
    """A finished recipe: its tables, figures (PNG paths), run files and Markdown summary."""

    name: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    runs: list[Path] = field(default_factory=list)
    markdown: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # numbers the paper report sets beside the claims
