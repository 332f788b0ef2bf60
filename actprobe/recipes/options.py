"""What a recipe was asked for, checked on creation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..datasets import NAMES as DATA_NAMES
from ..errors import OptionError

# The paper's stated settings (Section 4): Adam "with a momentum of 0.9" (β1) and learning rate 0.4.
PAPER_LR = 0.4
# What the recipes use by default: the paper's literal settings do not train (see docs/RESULTS.md).
DEFAULT_LR = 1e-3
ADAM_BETAS = (0.9, 0.999)


@dataclass(frozen=True, kw_only=True)
class RecipeOptions:
    """Options shared by the recipes; each recipe reads the ones it needs.

    ``per_class`` keeps only the first that many images of each class in both splits (reduced runs).
    ``iterations`` is the init recipe's number of training steps; ``epochs`` the wib recipe's.
    """

    data: tuple[str, ...] = DATA_NAMES
    epochs: int = 20
    seeds: int = 2
    iterations: int = 300
    batch_size: int = 256
    lr: float = DEFAULT_LR
    device: str = "auto"
    out_dir: Path = Path("actprobe-recipes")
    per_class: int | None = None
    every: int | None = None  # record every k-th step; None: the recipe's default
    calibration_batches: int = 10
    experiments: int = 50
    width: int = 784
    depth: int = 10
    fresh: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "seeds", "iterations", "batch_size", "calibration_batches", "experiments",
                     "width", "depth"):
            _positive(name, getattr(self, name))
        for name in ("per_class", "every"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if not self.data:
            raise OptionError("--data names no data set")
        for name in self.data:
            if name not in DATA_NAMES:
                raise OptionError(f"unknown data set {name!r}; use {', '.join(DATA_NAMES)} or both")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < float("inf"):
            raise OptionError(f"--lr must be a positive number, got {self.lr!r}")


def parse_data(value: str) -> tuple[str, ...]:
    """``fashion-mnist``, ``cifar10`` or ``both`` (also a comma-separated list) → data set names."""
    names: list[str] = []
    for part in value.split(","):
        part = part.strip()
        names.extend(DATA_NAMES if part == "both" else [part])
    return tuple(dict.fromkeys(names))  # RecipeOptions checks them


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
