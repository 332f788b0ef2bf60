"""Recipe ``init`` (the paper's Fig. 7–9): the reference CNN with ReLU under each init scheme.

For each data set and scheme the CNN trains for the first ``iterations`` steps (default 300,
batch 256, standardised inputs), the probe recording every step. Figures: per-layer mean and std
of the activations against iteration (Fig. 7, 9) and near-zero % per layer at the first iteration,
the row the table reads (Fig. 8). The verdict looks at the first step: a scheme "keeps the std near 1"
when every convolution's output std lies within [1/2, 2]; otherwise the signal "shrinks" or "grows"
with depth.
"""

from __future__ import annotations

import math

import numpy as np

from .. import datasets
from ..analysis.roles import activation_sites, linear_sites, mean_over_steps
from ..init import PAPER_SCHEMES
from ..render import figures
from ..runfile.reader import Run
from .base import Context, RecipeResult
from .tables import fmt, pct, table
from .training import Config, run_config

NAME = "init"
NEAR_ONE = (0.5, 2.0)
FIRST_ROW = 0  # the table, the verdict and the near-zero figure all read the first recorded iteration


def verdict(conv_std: np.ndarray) -> str:
    low, high = NEAR_ONE
    if np.all((conv_std >= low) & (conv_std <= high)):
        return "keeps std near 1"
    if conv_std.min() < low and conv_std[-1] <= conv_std[0]:
        return "std shrinks with depth"
    if conv_std.max() > high and conv_std[-1] >= conv_std[0]:
        return "std grows with depth"
    return "std off 1"


def epochs_for(ctx: Context, data: str) -> int:
    options = ctx.options
    dataset = datasets.load(data, ctx.data_root)
    images = dataset.batches("train", batch_size=options.batch_size, per_class=options.per_class).images
    return max(1, math.ceil(options.iterations / math.ceil(images / options.batch_size)))


def reproduce(ctx: Context) -> RecipeResult:
    options = ctx.options
    result = RecipeResult(NAME)
    rows = []
    for data in options.data:
        runs: dict[str, Run] = {}
        epochs = epochs_for(ctx, data)
        for scheme in PAPER_SCHEMES:
            config = Config(recipe=NAME, data=data, init=scheme, activation="relu", seed=0, optimizer="adam",
                            lr=options.lr, epochs=epochs, batch_size=options.batch_size,
                            iterations=options.iterations, per_class=options.per_class or 0,
                            every=options.every or 1)
            path = ctx.out(NAME) / f"{config.stem}.h5"
            run, seconds = run_config(config, path, device=ctx.device, data_root=ctx.data_root,
                                      calibration_batches=options.calibration_batches, fresh=options.fresh,
                                      progress=ctx.progress)
            ctx.done(config.stem, f"val acc {run.epochs['val_accuracy'][-1]:.3f}", seconds)
            runs[scheme] = run
            result.runs.append(path)
            conv = run.stats["std"][FIRST_ROW, linear_sites(run)[:-1]].astype(np.float64)  # the four convolutions
            act = activation_sites(run)
            near_zero = run.stats["near_zero"][FIRST_ROW, act].astype(np.float64)
            rows.append((data, scheme, *(fmt(s, 2) for s in conv),
                         f"{pct(near_zero.min())}–{pct(near_zero.max())}", verdict(conv)))
            result.facts[f"{data}.{scheme}.conv_std"] = conv.tolist()
            result.facts[f"{data}.{scheme}.near_zero_first"] = near_zero.tolist()
            result.facts[f"{data}.{scheme}.near_zero_mean"] = mean_over_steps(run, "near_zero", act).tolist()
            result.facts[f"{data}.{scheme}.verdict"] = verdict(conv)
        out = ctx.out(NAME) / "figures"
        result.figures.append(figures.layer_lines(
            runs, f"{data}: activations' mean and std over the first {options.iterations} iterations "
                  "(Fig. 7, 9)", out / f"init-{data}-mean-std.png"))
        result.figures.append(figures.near_zero_bars(
            runs, f"{data}: near-zero activations (|a| ≤ 0.05) at the first iteration, as in the table (Fig. 8)",
            out / f"init-{data}-near-zero.png", row=FIRST_ROW))
    result.tables.append(table(
        "Init schemes at the first iteration: std of each convolution's output, near-zero % of the ReLUs",
        ("data", "init", "conv 1 std", "conv 2 std", "conv 3 std", "conv 4 std", "near-zero (ReLU 1–4)",
         "verdict"), rows,
        (f"verdict: every conv std within [{NEAR_ONE[0]}, {NEAR_ONE[1]}] → keeps std near 1",)))
    return result
