"""What a recipe was asked for, checked on creation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._checks import check_number, positive_int
from ..datasets import NAMES as DATA_NAMES
from ..errors import OptionError
from ..training import DEFAULT_LR

# The paper's stated settings (Section 4): Adam "with a momentum of 0.9" (β1) and learning rate 0.4.
PAPER_LR = 0.4
# The recipes use DEFAULT_LR (1e-3): the paper's literal settings do not train (see docs/RESULTS.md).
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
            positive_int(_flag(name), getattr(self, name))
        for name in ("per_class", "every"):
            positive_int(_flag(name), getattr(self, name), allow_none=True)
        if not self.data:
            raise OptionError("--data names no data set")
        for name in self.data:
            if name not in DATA_NAMES:
                raise OptionError(f"unknown data set {name!r}; use {', '.join(DATA_NAMES)} or both")
        check_number("--lr", self.lr, minimum=0.0, strict=True)


def parse_data(value: str) -> tuple[str, ...]:
    """``fashion-mnist``, ``cifar10`` or ``both`` (also a comma-separated list) → data set names."""
    names: list[str] = []
    for part in value.split(","):
        part = part.strip()
        names.extend(DATA_NAMES if part == "both" else [part])
    return tuple(dict.fromkeys(names))  # RecipeOptions checks them


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"
