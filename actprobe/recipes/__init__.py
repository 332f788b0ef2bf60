"""Built-in recipes that reproduce the WIB-ReLU paper with actprobe: ``toy``, ``init``, ``wib``, ``paper``.

    actprobe recipe list
    actprobe recipe wib --data fashion-mnist --epochs 20 --seeds 2

Each configuration writes its own run file under ``<out-dir>/<recipe>/``; each recipe writes PNG
figures under ``<out-dir>/<recipe>/figures/`` and its tables to ``<out-dir>/<recipe>/summary.md``;
``paper`` runs the other three and writes ``<out-dir>/report.md``.

A recipe is a module with ``reproduce(ctx) -> RecipeResult``, listed in ``RECIPES``. Recipes train
through ``actprobe.training``, write run files through the ``Probe`` and ``actprobe.runfile``, and
draw with ``actprobe.render.figures``; they print nothing themselves (``Context.progress`` and
``Context.say`` are the CLI's).

May import: every layer but the CLI. Never rich or matplotlib directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionError
from .base import Context, RecipeResult
from .options import RecipeOptions
from .tables import to_markdown


@dataclass(frozen=True)
class Recipe:
    name: str
    figures: str
    summary: str
    reproduce: Callable[[Context], RecipeResult]


def _toy(ctx: Context) -> RecipeResult:
    from . import toy
    return toy.reproduce(ctx)


def _init(ctx: Context) -> RecipeResult:
    from . import init_schemes
    return init_schemes.reproduce(ctx)


def _wib(ctx: Context) -> RecipeResult:
    from . import wib
    return wib.reproduce(ctx)


def _paper(ctx: Context) -> RecipeResult:
    from . import paper
    return paper.reproduce(ctx)


RECIPES: dict[str, Recipe] = {
    "toy": Recipe("toy", "Fig. 3–5, Eq. 4", "matrix products of N(0,1) inputs: N(0,1), Eq. 5, Kaiming weights, "
                  "ReLU, WIB-ReLU; growth or decay over a deep stack", _toy),
    "init": Recipe("init", "Fig. 7–9", "the reference CNN with ReLU under torch-default, sqrt3, kaiming, eq5, eq6 "
                   "for the first 300 iterations", _init),
    "wib": Recipe("wib", "Fig. 10–13", "the reference CNN, Kaiming init, 20 epochs: ReLU, LeakyReLU, PReLU, ELU, "
                  "WIB-ReLU fixed and batch, ≥ 2 seeds", _wib),
    "paper": Recipe("paper", "all", "toy + init + wib + a check of the paper's stated settings, one report "
                    "beside the paper's claims", _paper),
}


def find(name: str) -> Recipe:
    """The recipe called ``name``; an ``OptionError`` naming the others when there is none."""
    if name not in RECIPES:
        raise OptionError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)} (see: actprobe recipe list)")
    return RECIPES[name]


def run_recipe(name: str, ctx: Context) -> RecipeResult:
    """Run one recipe and write its ``summary.md`` (the caller prints ``result.tables``)."""
    result = find(name).reproduce(ctx)
    if result.markdown is None:
        result.markdown = write_summary(result, ctx.out(name))
    return result


def write_summary(result: RecipeResult, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.md"
    parts = [f"# actprobe recipe `{result.name}`\n"]
    parts += [to_markdown(t) for t in result.tables]
    parts += [f"![{figure.stem}]({figure.relative_to(folder).as_posix()})\n" for figure in result.figures]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


__all__ = ["RECIPES", "Context", "Recipe", "RecipeOptions", "RecipeResult", "find", "run_recipe", "write_summary"]
