"""``actprobe.plot(run)``: the figures of ``actprobe plot`` as matplotlib figures, for notebooks and scripts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..analysis.roles import layer_chain, sites_matching
from ..errors import OptionError
from ..runfile.reader import Run, read


def chosen_columns(run: Run, select: Sequence[str]) -> list[int]:
    """The sites a figure draws: those matching ``select`` (names, globs, class names), else the layer chain.

    Raises:
        OptionError: the run has no rows, or ``select`` matches no site.
    """
    if run.rows == 0:
        raise OptionError(f"{run.path} has no rows committed yet: nothing to draw")
    if not select:
        return list(layer_chain(run))
    columns = sites_matching(run, select)
    if not columns:
        raise OptionError(f"--select {' '.join(select)} matches no site name or module class; the sites "
                          f"are: {', '.join(run.sites)}")
    return list(columns)


def plot(source: str | os.PathLike[str] | Run, select: str | Sequence[str] = ()) -> list[Any]:
    """The figures ``actprobe plot`` writes, as open ``matplotlib.figure.Figure`` objects (each labelled
    ``fig.get_label()`` with the file name it would have had): mean and std per layer against step, the
    near-zero fraction per layer, and — when recorded — gradient std per layer, update ratios and
    histogram images. In Jupyter the last value of a cell shows them.

    Raises:
        FormatError: the file cannot be read; OptionError: no rows, or ``select`` matches nothing.
    """
    from .figures import kept_figures, plot_run
    from .training_figures import training_figures

    run = source if isinstance(source, Run) else read(source)
    columns = chosen_columns(run, [select] if isinstance(select, str) else list(select))
    # a distributed run's statistics come from its segment folder: name the figures after the run's folder
    stem = run.path.parent.name if run.distributed and run.path.name.startswith("segment-") else run.path.stem
    with kept_figures() as figures:
        plot_run(run, columns, Path("."), stem)
        training_figures(run, columns, Path("."), stem)
    return figures
