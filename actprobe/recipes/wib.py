"""Recipe ``wib`` (the paper's Fig. 10–13): ReLU, LeakyReLU, PReLU, ELU and WIB-ReLU (both modes).

The reference CNN with Kaiming init trains ``epochs`` epochs (default 20, batch 256) per data set,
activation and seed (``seeds``, default 2); the probe records every ``every``-th step (default 5).
Figures: train/validation loss and accuracy per epoch (Fig. 12, 13), near-zero % per layer
(Fig. 10), per-layer mean and std against step (Fig. 11). The table: the last epoch's values, mean
± half the range over the seeds, and the change against ReLU.
"""

from __future__ import annotations

import numpy as np

from ..analysis.roles import activation_sites, mean_over_steps
from ..nn import ACTIVATIONS
from ..render import figures
from ..runfile.reader import Run
from .base import Context, RecipeResult
from .tables import table
from .training import EPOCH_FIELDS, Config, run_config

NAME = "wib"
DEFAULT_EVERY = 5


def configs(ctx: Context, data: str, *, recipe: str = NAME, lr: float | None = None,
            epochs: int | None = None, activations: tuple[str, ...] = tuple(ACTIVATIONS),
            seeds: int | None = None) -> list[Config]:
    options = ctx.options
    return [Config(recipe=recipe, data=data, init="kaiming", activation=activation, seed=seed, optimizer="adam",
                   lr=options.lr if lr is None else lr, epochs=options.epochs if epochs is None else epochs,
                   batch_size=options.batch_size, per_class=options.per_class or 0,
                   every=options.every or DEFAULT_EVERY)
            for activation in activations for seed in range(options.seeds if seeds is None else seeds)]


def train_all(ctx: Context, configs: list[Config], recipe: str) -> dict[str, list[Run]]:
    """Run (or reuse) every config; runs grouped by activation, in the configs' order."""
    groups: dict[str, list[Run]] = {}
    for config in configs:
        path = ctx.out(recipe) / f"{config.stem}.h5"
        run, seconds = run_config(config, path, device=ctx.device, data_root=ctx.data_root,
                                  calibration_batches=ctx.options.calibration_batches, fresh=ctx.options.fresh,
                                  progress=ctx.progress)
        ctx.done(config.stem, f"val loss {run.epochs['val_loss'][-1]:.3f}, "
                              f"val acc {run.epochs['val_accuracy'][-1]:.3f}", seconds)
        groups.setdefault(config.activation, []).append(run)
    return groups


def final(runs: list[Run], field: str) -> np.ndarray:
    return np.array([run.epochs[field][-1] for run in runs], dtype=np.float64)


def spread(values: np.ndarray, digits: int = 3) -> str:
    half = (values.max() - values.min()) / 2 if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {half:.{digits}f}"


def reproduce(ctx: Context) -> RecipeResult:
    options = ctx.options
    result = RecipeResult(NAME)
    rows = []
    for data in options.data:
        groups = train_all(ctx, configs(ctx, data), NAME)
        result.runs += [run.path for runs in groups.values() for run in runs]
        base = {field: final(groups["relu"], field).mean() for field in EPOCH_FIELDS} if "relu" in groups else None
        for activation, runs in groups.items():
            values = {field: final(runs, field) for field in EPOCH_FIELDS}
            near_zero = np.mean([mean_over_steps(run, "near_zero", activation_sites(run)) for run in runs], axis=0)
            result.facts[f"{data}.{activation}"] = {field: float(v.mean()) for field, v in values.items()}
            result.facts[f"{data}.{activation}.near_zero"] = near_zero.tolist()
            tail = [run.stats["mean"][-max(1, run.rows // 10):, activation_sites(run)].astype(np.float64).mean(0)
                    for run in runs]
            result.facts[f"{data}.{activation}.final_mean"] = np.mean(tail, axis=0).tolist()
            change = "—"
            if base is not None and activation != "relu":
                loss_change = values["val_loss"].mean() / base["val_loss"] - 1
                acc_change = values["val_accuracy"].mean() - base["val_accuracy"]
                change = f"{100 * loss_change:+.1f}% / {100 * acc_change:+.2f} pt"
            rows.append((data, activation, *(spread(values[field]) for field in EPOCH_FIELDS), change,
                         f"{100 * near_zero.mean():.0f}%"))
        out = ctx.out(NAME) / "figures"
        seeds_text = f"{options.seeds} seed{'s' if options.seeds > 1 else ''}"
        result.figures.append(figures.epoch_curves(
            groups, f"{data}: Kaiming init, Adam lr {options.lr:g}, batch {options.batch_size}, {seeds_text} "
                    "(Fig. 12/13)", out / f"wib-{data}-curves.png"))
        first_seed = {activation: runs[0] for activation, runs in groups.items()}
        result.figures.append(figures.near_zero_bars(
            first_seed, f"{data}: near-zero activations (|a| ≤ 0.05), average over training (Fig. 10)",
            out / f"wib-{data}-near-zero.png"))
        result.figures.append(figures.layer_lines(
            first_seed, f"{data}: activations' mean and std during training, seed 0 (Fig. 11)",
            out / f"wib-{data}-mean-std.png"))
    result.tables.append(table(
        f"Last epoch ({options.epochs}), mean ± half-range over {options.seeds} seed(s)",
        ("data", "activation", "train loss", "train acc", "val loss", "val acc", "val loss / acc vs ReLU",
         "near-zero"), rows,
        ("validation = the data set's test split; near-zero = |a| ≤ 0.05 at the activations, average over "
         "layers and recorded steps",)))
    return result
