"""What every recipe gets (``Context``) and gives back (``RecipeResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .options import RecipeOptions
from .tables import Table


@dataclass
class Context:
    """A recipe's options, resolved device, data root, and where to report progress."""

    options: RecipeOptions
    device: torch.device
    data_root: Any = None
    progress: Any = None  # a recipes.progress.RecipeProgress, or None for silence

    def out(self, recipe: str) -> Path:
        return self.options.out_dir / recipe

    def step(self, label: str, step: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress.step(label, step, total)

    def done(self, label: str, text: str) -> None:
        if self.progress is not None:
            self.progress.done(label, text)


@dataclass
class RecipeResult:
    """A finished recipe: its tables, figures (PNG paths), run files and Markdown summary."""

    name: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    runs: list[Path] = field(default_factory=list)
    markdown: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # numbers the paper report sets beside the claims
