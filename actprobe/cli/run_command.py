"""``actprobe run``: choose the output file, run the model file, print the summary of what was recorded."""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from .._text import one_line
from ..datasets import use_data_root
from ..errors import FormatError, OptionError, RunFileError
from ..runfile.lock import lock_path
from .codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from .modelfile import load_model_file
from .ranks import in_job, launch
from .runner import RunOptions, RunOutcome, run_model_file


def output_path(model_file: Path, out: Path | None, overwrite: bool, nproc: int = 1) -> Path:
    """``out`` (refused if it exists, unless ``overwrite``), or ``<stem>.h5``, ``<stem>-2.h5``, … in the cwd.
    With ``nproc`` > 1 it is the run folder of the ranks' files."""
    if out is not None:
        if nproc > 1 and out.is_file():
            raise RunFileError(f"--out {out} is a file; a --nproc run writes a folder of rank files: choose another --out")
        if out.is_dir() and nproc == 1:
            raise RunFileError(f"--out {out} is a folder; name a file such as {out / (model_file.stem + '.h5')}")
        if out.exists() and not overwrite:
            raise RunFileError(f"{out} exists; pass --overwrite to replace it, or choose another --out")
        return out
    for n in range(1, 10_000):
        candidate = Path(f"{model_file.stem}.h5" if n == 1 else f"{model_file.stem}-{n}.h5")
        if not candidate.exists() and not lock_path(candidate).exists():
            return candidate
    raise RunFileError(f"no free file name {model_file.stem}-N.h5 here; pass --out")


def execute(options: RunOptions, data_root: Path | None = None, console: Console | None = None) -> int:
    """Run ``options.model_file`` and print the summary; return the exit code (0, 2 on a failure, 130 on Ctrl-C).

    Raises:
        ActprobeError: bad input found before anything was recorded.
    """
    from ..render.progress import ProgressDisplay

    console = console or Console()
    if in_job():  # one rank of a --nproc run: the launcher chose --out; only rank 0 prints
        if options.out is None:
            raise RunFileError("a rank of a distributed run needs --out (the run folder)")
        if os.environ.get("RANK") != "0":
            console = Console(quiet=True)
    else:
        options = replace(options, out=output_path(options.model_file, options.out, options.overwrite, options.nproc))
        if options.nproc > 1:
            check_before_launch(options)
            return launch(options.nproc, arguments(options, data_root))
    with warnings.catch_warnings(record=True) as caught, use_data_root(data_root):
        warnings.simplefilter("default")
        spec = load_model_file(options.model_file)
        outcome = run_model_file(spec, options, ProgressDisplay(console), lambda source, notes: announce(
            console, source, notes))
    for warning in _unique(caught):
        console.print(f"warning: {warning}", style="yellow", highlight=False, markup=False)
    return report(outcome, console)


def check_before_launch(options: RunOptions) -> None:
    """What can be refused before any process starts: a model file that does not load, an init check,
    no data(), a device this machine does not have."""
    from ..training import resolve_device

    spec = load_model_file(options.model_file)
    resolve_device(options.device)
    if spec.data is None or options.init_check:
        raise OptionError("--nproc trains on data() in several processes; "
                          + ("an init check runs in one" if options.init_check else f"{spec.path} defines no data()"))


def arguments(options: RunOptions, data_root: Path | None) -> list[str]:
    """The ``actprobe run`` arguments of ``options`` (``--out`` resolved), for each rank of a --nproc run."""
    argv = [str(options.model_file), "--out", str(options.out), "--device", options.device, "--every",
            str(options.every), "--seed", str(options.seed), "--batch-size", str(options.batch_size),
            "--hist-every", str(options.hist_every)]
    for flag, value in (("--steps", options.steps), ("--epochs", options.epochs), ("--data-root", data_root)):
        if value is not None:
            argv += [flag, str(value)]
    for name in options.select:
        argv += ["--select", name]
    for flag, on in (("--init-check", options.init_check), ("--grads", options.grads), ("--params", options.params),
                     ("--overwrite", options.overwrite)):
        if on:
            argv.append(flag)
    return argv


def announce(console: Console, source: str, notes: tuple[str, ...]) -> None:
    """Say what the data is (in yellow when the full set is not used), before the progress bar."""
    console.print(f"data: {source}", highlight=False, markup=False, style="yellow" if notes else None)
    for note in notes:
        console.print(f"  full set not used: {note}", highlight=False, markup=False, style="yellow")


def _unique(caught: list[warnings.WarningMessage]) -> list[str]:
    return list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))


def report(outcome: RunOutcome, console: Console) -> int:
    """Print what the run recorded and how it ended; return the exit code."""
    from ..analysis.summary import summarize
    from ..render.summary import render_summary
    from ..runfile.reader import read

    try:
        run = read(outcome.path) if outcome.path.exists() else None
    except FormatError as exc:
        console.print(f"warning: cannot read back {outcome.path}: {one_line(exc)}", style="yellow", markup=False)
        run = None
    if run is not None and run.rows:
        # the progress display already said what the data was
        render_summary(summarize(run, live=run.live), console, data_line=False)
        kept = f"{run.rows} recorded steps are in {outcome.path}"
    else:
        kept = "nothing was recorded"
    what = "training steps" if outcome.mode == "train" else "init-check passes"
    if outcome.error is not None:
        Console(stderr=True).print(f"error: {outcome.error}", style="bold red", highlight=False, markup=False,
                                   soft_wrap=True)
        console.print(f"stopped after {outcome.steps} {what}; {kept}", highlight=False, markup=False)
        return EXIT_BAD_INPUT
    if outcome.interrupted:
        console.print(f"interrupted after {outcome.steps} {what}; {kept}", style="yellow", highlight=False,
                      markup=False)
        return EXIT_INTERRUPTED
    rate = outcome.steps / outcome.seconds if outcome.seconds > 0 else float("inf")
    where = outcome.device
    if run is not None and run.distributed:
        ranks = run.attrs["ranks"]
        where = f"{ranks} rank{'s' if ranks != 1 else ''} ({outcome.device.split(':')[0]})"
    console.print(f"{outcome.steps} {what} on {where} in {outcome.seconds:.1f} s ({rate:.1f}/s); {kept}",
                  highlight=False, markup=False)
    return 0


__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "execute", "output_path", "report"]
