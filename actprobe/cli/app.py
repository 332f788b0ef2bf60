"""The ``actprobe`` commands (typer). Commands are thin: parse, call the library, report errors in one line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

try:  # newer typer vendors click under this name, older typer depends on click itself
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click

from .._version import __version__
from ..errors import ActprobeError
from .codes import EXIT_BAD_INPUT


class _OneLineErrors(TyperGroup):
    """Usage errors as one ``error: …`` line on stderr with exit code 2, instead of a boxed panel."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.format_message())
            code = 0
        except click.ClickException as exc:
            hint = f" (see: {exc.ctx.command_path} --help)" if getattr(exc, "ctx", None) else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            code = exc.exit_code
        except typer.Abort:
            click.echo("error: aborted", err=True)
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=True,
                  help="actprobe: per-layer activation statistics of PyTorch models.")


def _fail(exc: ActprobeError | str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    from ..render.text import printable  # the message may quote a file's site names or attributes

    typer.echo(f"error: {printable(exc)}", err=True)
    return typer.Exit(code)


def _exit_with(call: Any) -> None:
    """Run a command's body: an ``ActprobeError`` becomes one ``error:`` line, a non-zero result the exit code."""
    try:
        code = call()
    except ActprobeError as exc:
        raise _fail(exc) from None
    if code:
        raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"actprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


def _read(path: Path, rank: int | None = None) -> Any:
    from ..runfile.reader import read

    try:
        return read(path, rank=rank)
    except ActprobeError as exc:
        raise _fail(exc) from None


RANK_HELP = "A distributed run: look at this rank's own file instead of the merged global statistics."


@app.command()
def info(path: Path = typer.Argument(..., help="A run file written by actprobe (or a distributed run's folder)."),
         rank: int | None = typer.Option(None, "--rank", help=RANK_HELP)) -> None:
    """Print a run file's attributes, sites and row count."""
    from ..render.info import info_lines

    for line in info_lines(_read(path, rank)):
        typer.echo(line)


THRESHOLD_HELP = "NAME=VALUE to change a rule's threshold; repeatable (docs/DIAGNOSE.md lists them)."


@app.command()
def show(
    path: Path = typer.Argument(..., help="A run file written by actprobe, finished or still growing."),
    flagged: bool = typer.Option(False, "--flagged", help="Only the sites with a warning or an error."),
    top: int | None = typer.Option(None, "--top", help="Only the K sites with the most severe findings "
                                   "(0: all)."),
    select: list[str] = typer.Option([], "--select", help="Site name glob or module class name (ReLU) to show; "
                                     "repeatable."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    threshold: list[str] = typer.Option([], "--threshold", help=THRESHOLD_HELP),
    rank: int | None = typer.Option(None, "--rank", help=RANK_HELP),
) -> None:
    """Summarise a run file: per-site statistics at the first and last recorded step, and what the rules
    (the same as diagnose's) observed at each site."""
    from .views import ShowOptions, show as show_view

    try:
        show_view(path, ShowOptions(thresholds=tuple(threshold), flagged=flagged, top=top, select=tuple(select),
                                    json_output=json_output, rank=rank))
    except ActprobeError as exc:
        raise _fail(exc) from None


@app.command()
def run(
    model_file: Path = typer.Argument(..., help="A Python file defining model() (and optionally data(), "
                                      "loss_fn, optimizer(params), input_shape or example_input())."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run file to write [default: FILE's name .h5, "
                                    "numbered if it exists]."),
    steps: int | None = typer.Option(None, "--steps", help="Training steps (or init-check passes, default 10)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs over data() [default: 1 when no --steps]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (cuda:N)."),
    every: int = typer.Option(1, "--every", help="Record every k-th step."),
    select: list[str] = typer.Option([], "--select", help="Module name glob or class name (ReLU) to record; "
                                     "repeatable [default: every leaf module, and container outputs no "
                                     "recorded module produced]."),
    seed: int = typer.Option(0, "--seed", help="Seed of torch's generator, set before model() and data()."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder with data sets "
                                          "(also $ACTPROBE_DATA)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Init check: samples per forward pass."),
    init_check: bool = typer.Option(False, "--init-check", help="Run the init check even if FILE defines data()."),
    grads: bool = typer.Option(False, "--grads", help="Also record the statistics of each site's gradient "
                               "d(loss)/d(output) (training only)."),
    params: bool = typer.Option(False, "--params", help="Also record each parameter's values, gradient and update "
                                "at the optimizer's step (training only)."),
    hist_every: int = typer.Option(0, "--hist-every", help="Histograms of every site every k-th recorded step "
                                   "(0: none)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the --out file if it exists."),
    nproc: int = typer.Option(1, "--nproc", help="Train in N processes with DistributedDataParallel (torchrun; "
                              "gloo on the CPU, NCCL with one GPU each): --out is then the run folder of their "
                              "rank files, read as one run."),
) -> None:
    """Run a model file with actprobe attached: train on its data(), or check its initialisation."""
    from .run_command import execute
    from .runner import RunOptions

    try:
        options = RunOptions(model_file=model_file, out=out, steps=steps, epochs=epochs, device=device, every=every,
                             select=tuple(select), seed=seed, batch_size=batch_size, init_check=init_check,
                             grads=grads, params=params, hist_every=hist_every, overwrite=overwrite, nproc=nproc)
        code = execute(options, data_root)
    except ActprobeError as exc:
        raise _fail(exc) from None
    if code:
        raise typer.Exit(code)


@app.command(name="compare")
def compare_command(
    files: list[Path] = typer.Argument(..., help="Two or more run files, finished or still growing."),
    step: str = typer.Option("last", "--step", help="first, last, or a step number N (each run's row at N, "
                             "else its last row before N)."),
    stats: str = typer.Option("mean,std,near_zero,dead", "--stats", help="Comma-separated statistics: mean, std, "
                              "near_zero, dead, nonfinite, min, max, count."),
    figure: Path | None = typer.Option(None, "--figure", help="Also write an overlay figure (PNG) here."),
    top: int | None = typer.Option(None, "--top", help="Show only the K sites with the largest changes "
                                   "[default: all up to 40 sites, else 40]; 0 shows all."),
) -> None:
    """Compare runs site by site: by name where the module types agree, else by position in the layer graph
    among sites of the same role."""
    from .views import compare

    try:
        compare(files, step=step, stats=stats, figure=figure, top=top)
    except ActprobeError as exc:
        raise _fail(exc) from None


@app.command(name="diagnose")
def diagnose_command(
    path: Path = typer.Argument(..., help="A run file, finished or still growing."),
    json_output: bool = typer.Option(False, "--json", help="Print the findings as a JSON list."),
    fail_on: str = typer.Option("error", "--fail-on", help="Exit 1 when a finding is this severe or more: "
                                "info, warning, error, or never."),
    threshold: list[str] = typer.Option([], "--threshold", help=THRESHOLD_HELP),
    rank: int | None = typer.Option(None, "--rank", help=RANK_HELP),
) -> None:
    """Turn a run's statistics into findings with advice; the exit code can gate CI."""
    from .views import diagnose

    _exit_with(lambda: diagnose(path, thresholds=threshold, fail_on=fail_on, json_output=json_output, rank=rank))


@app.command(name="plot")
def plot_command(
    path: Path = typer.Argument(..., help="A run file, finished or still growing."),
    out: Path = typer.Option(Path("."), "--out", help="Folder for the PNG figures."),
    select: list[str] = typer.Option([], "--select", help="Site name glob or module class name to draw; "
                                     "repeatable [default: the activations, else the Conv/Linear layers]."),
    rank: int | None = typer.Option(None, "--rank", help=RANK_HELP),
) -> None:
    """Draw the standard figures of a run: per-layer mean and std against step, near-zero % per layer."""
    from .views import plot

    try:
        written = plot(path, out, select, rank)
    except ActprobeError as exc:
        raise _fail(exc) from None
    for item in written:
        typer.echo(f"wrote {item}")


@app.command()
def watch(
    path: Path = typer.Argument(..., help="A run file (or a distributed run's folder) a probe is writing."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between two looks at the file."),
    idle: float = typer.Option(120.0, "--idle", help="Stop after this many seconds without new rows when no "
                               "writer on this machine holds the file (a writer on another machine, or a crash)."),
    flagged: bool = typer.Option(False, "--flagged", help="Only the sites with a warning or an error."),
    threshold: list[str] = typer.Option([], "--threshold", help=THRESHOLD_HELP),
    rank: int | None = typer.Option(None, "--rank", help=RANK_HELP),
) -> None:
    """Follow a run while it is written: the summary redrawn as rows arrive, until the writer closes it."""
    from .watch import WatchOptions, watch as watch_run

    _exit_with(lambda: watch_run(path, WatchOptions(interval=interval, idle=idle, rank=rank, flagged=flagged,
                                                    thresholds=tuple(threshold))))


@app.command(name="export")
def export_command(
    path: Path = typer.Argument(..., help="A run file (or a distributed run's folder), finished or growing."),
    tensorboard: Path = typer.Option(..., "--tensorboard", help="Folder to write TensorBoard event files into "
                                     "(point `tensorboard --logdir` at it)."),
    stats: str = typer.Option(",".join(("mean", "std", "near_zero", "dead", "nonfinite")), "--stats",
                              help="Comma-separated statistics to export (of the outputs, and of the gradients "
                                   "when recorded)."),
    rank: int | None = typer.Option(None, "--rank", help=RANK_HELP),
) -> None:
    """Export a run's statistics, scalars and histograms as TensorBoard event files."""
    from ..render.tensorboard import export_tensorboard

    run = _read(path, rank)
    try:
        written, values = export_tensorboard(run, tensorboard, [s.strip() for s in stats.split(",") if s.strip()])
    except ActprobeError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(f"cannot write {tensorboard}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {values} values of {run.rows} rows to {written}")


@app.command()
def recipe(
    name: str = typer.Argument(..., help="A recipe (toy, init, wib, paper), or 'list'."),
    data: str = typer.Option("both", "--data", help="fashion-mnist, cifar10 or both."),
    epochs: int = typer.Option(20, "--epochs", help="wib: training epochs."),
    seeds: int = typer.Option(2, "--seeds", help="wib: seeds per configuration (0 … K-1)."),
    iterations: int = typer.Option(300, "--iterations", help="init: training iterations per scheme."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (cuda:N)."),
    out_dir: Path = typer.Option(Path("actprobe-recipes"), "--out-dir", help="Where run files, figures and "
                                 "tables go."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder with data sets (also $ACTPROBE_DATA)."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam's learning rate."),
    paper_settings: bool = typer.Option(False, "--paper-settings", help="Use the paper's stated lr 0.4 "
                                        "(it does not train; see docs/RESULTS.md)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Training batch size."),
    per_class: int | None = typer.Option(None, "--per-class", help="Reduced run: only the first N images of "
                                         "each class in each split."),
    every: int | None = typer.Option(None, "--every", help="Record every k-th step [default: init 1, wib 5]."),
    experiments: int = typer.Option(50, "--experiments", help="toy: experiments per case."),
    width: int = typer.Option(784, "--width", help="toy: inputs and units per layer (n)."),
    depth: int = typer.Option(10, "--depth", help="toy: layers of the deep stack (Eq. 4)."),
    fresh: bool = typer.Option(False, "--fresh", help="Rerun configurations whose finished run files exist."),
) -> None:
    """Reproduce the WIB-ReLU paper: run a built-in recipe, or list them."""
    from rich.console import Console

    if name == "list":
        from ..recipes import RECIPES

        for item in RECIPES.values():
            typer.echo(f"{item.name:<6} {item.figures:<16} {item.summary}")
        return
    from ..recipes import RecipeOptions
    from ..recipes.options import PAPER_LR, parse_data
    from .recipe_command import execute

    try:
        options = RecipeOptions(data=parse_data(data), epochs=epochs, seeds=seeds, iterations=iterations,
                                device=device, out_dir=out_dir, lr=PAPER_LR if paper_settings else lr,
                                batch_size=batch_size, per_class=per_class, every=every, experiments=experiments,
                                width=width, depth=depth, fresh=fresh)
        code = execute(name, options, data_root, Console())
    except ActprobeError as exc:
        raise _fail(exc) from None
    if code:
        raise typer.Exit(code)


def main() -> None:
    app(prog_name="actprobe")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
