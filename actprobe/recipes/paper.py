"""Recipe ``paper``: ``toy``, ``init`` and ``wib``, a check of the paper's stated training settings,
and one report (``<out-dir>/report.md``) that sets our numbers beside the paper's claims.

Each claim gets our number and a verdict worked out from it here (the thresholds are in the code
below, next to each claim); the report says what was run, on which machine, how long it took, with
which versions and data.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..reader import Run
from . import init_schemes, toy, wib
from .base import Context, RecipeResult
from .options import PAPER_LR
from .tables import Table, table, to_markdown

NAME = "paper"
SETTINGS = "settings"
PAPER_FASHION_WIB = {"train_loss": 0.133, "val_loss": 0.318, "train_accuracy": 0.951, "val_accuracy": 0.899}


def settings_check(ctx: Context) -> tuple[Table, dict[str, Any]]:
    """One epoch with the paper's literal Adam lr 0.4 (β1 = 0.9), beside the chosen lr's first epoch."""
    rows, facts = [], {}
    for data in ctx.options.data:
        literal = wib.train_all(ctx, wib.configs(ctx, data, recipe=SETTINGS, lr=PAPER_LR, epochs=1,
                                                  activations=("relu", "wib-relu-fixed"), seeds=1), SETTINGS)
        chosen = wib.train_all(ctx, wib.configs(ctx, data, activations=("relu", "wib-relu-fixed"), seeds=1),
                               wib.NAME)
        for activation in literal:
            for lr, runs in ((PAPER_LR, literal), (ctx.options.lr, chosen)):
                epochs = runs[activation][0].epochs
                rows.append((data, activation, f"{lr:g}", f"{epochs['train_loss'][0]:.3g}",
                             f"{epochs['train_accuracy'][0]:.3f}", f"{epochs['val_accuracy'][0]:.3f}"))
                facts[f"{data}.{activation}.{lr:g}"] = float(epochs["val_accuracy"][0])
    return table("The paper's stated settings: Adam (β1 = 0.9), lr 0.4, against the chosen lr — first epoch",
                 ("data", "activation", "lr", "train loss", "train acc", "val acc"), rows), facts


def environment(device: torch.device) -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none used"
    import h5py
    import matplotlib

    return [f"machine: {cpu}, {os.cpu_count()} CPU cores; GPU: {gpu}; {platform.system()} {platform.release()}",
            f"versions: actprobe {__version__}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"h5py {h5py.__version__}, NumPy {np.__version__}, matplotlib {matplotlib.__version__}",
            f"device: {device}; torch threads: {torch.get_num_threads()}"]


def _claims(ctx: Context, facts: dict[str, dict[str, Any]]) -> Table:
    rows: list[tuple[str, str, str]] = []

    def claim(text: str, ours: str, holds: bool | None, note: str = "") -> None:
        verdict = "confirmed" if holds else "not confirmed" if holds is False else "observation"
        rows.append((text, ours, verdict + (f" ({note})" if note else "")))

    t = facts["toy"]
    low, high, _ = t["linear-normal.std"]
    claim("Fig. 3a: N(0,1) weights blow the output std up to 25–30", f"std {low:.1f}–{high:.1f} "
          f"(n = {ctx.options.width})", 20 <= low and high <= 35)
    _, _, eq5 = t["linear-eq5.std"]
    claim("Fig. 3b: Eq. 5 weights keep mean ≈ 0 and std ≈ 1", f"mean {t['linear-eq5.mean']:+.3f}, std {eq5:.3f}",
          abs(eq5 - 1) < 0.1 and abs(t["linear-eq5.mean"]) < 0.1)
    _, _, kaiming = t["relu-kaiming.std"]
    claim("Fig. 4b: Kaiming brings the std after ReLU back close to 1, mean well above 0",
          f"std {kaiming:.3f}, mean {t['relu-kaiming.mean']:+.3f}", kaiming > 0.75 and t["relu-kaiming.mean"] > 0.3,
          "std → √(1 − 1/π) = 0.83, not 1")
    claim("Fig. 5: WIB-ReLU centres the activations at 0", f"mean {t['wib-kaiming.mean']:+.3f}",
          abs(t["wib-kaiming.mean"]) < 0.05)
    claim("Eq. 4 with WIB-ReLU (not claimed; measured)", f"std ×{t['deep-wib-kaiming.per_layer']:.3f} per layer "
          "under Kaiming", None, "WIB-ReLU's output has ReLU's variance, so Kaiming's gain of 2 is 1 − 1/π short")
    i = facts["init"]
    for data in ctx.options.data:
        nz = np.array(i[f"{data}.torch-default.near_zero_mean"])
        claim(f"Fig. 8 ({data}): 55–90% near-zero activations under the default init",
              f"{100 * nz.min():.0f}–{100 * nz.max():.0f}% (ReLU 1–4, average over the iterations)",
              nz.min() >= 0.45 and nz.max() <= 0.95)
        conv = np.array(i[f"{data}.sqrt3.conv_std"])
        claim(f"Fig. 9 ({data}): gain √3 makes the std very close to 1",
              f"conv std {', '.join(f'{s:.2f}' for s in conv)}: {i[f'{data}.sqrt3.verdict']}",
              bool(np.all(np.abs(conv - 1) < 0.25)), "kaiming: " + i[f"{data}.kaiming.verdict"])
    w = facts["wib"]
    for data in ctx.options.data:
        nz_default = np.mean(i[f"{data}.torch-default.near_zero_mean"])
        nz_relu = np.mean(w[f"{data}.relu.near_zero"])
        nz_wib = np.mean(w[f"{data}.wib-relu-fixed.near_zero"])
        ratio = nz_default / nz_wib if nz_wib > 0 else float("inf")
        claim(f"Fig. 10 ({data}): about three times fewer near-zero activations with WIB-ReLU",
              f"{100 * nz_default:.0f}% (default init, ReLU) → {100 * nz_wib:.0f}% (WIB-ReLU fixed): ×{ratio:.1f} "
              f"fewer; Kaiming ReLU {100 * nz_relu:.0f}%", ratio >= 2.5)
    if "fashion-mnist" in ctx.options.data:
        for mode in ("wib-relu-fixed", "wib-relu-batch"):
            ours = w[f"fashion-mnist.{mode}"]
            text = ", ".join(f"{k.replace('_', ' ')} {ours[k]:.3f} (paper {v})" for k, v in PAPER_FASHION_WIB.items())
            close = all(abs(ours[k] - v) <= (0.05 if "loss" in k else 0.02) for k, v in PAPER_FASHION_WIB.items())
            claim(f"Fig. 12: Fashion-MNIST with WIB-ReLU ({mode}), last epoch", text, close,
                  "within 0.05 loss, 0.02 accuracy")
    others = ("relu", "leaky-relu", "prelu", "elu")
    for data in ctx.options.data:
        best = min(("wib-relu-fixed", "wib-relu-batch"), key=lambda m: w[f"{data}.{m}"]["val_loss"])
        b = w[f"{data}.{best}"]
        loss = [b["val_loss"] / w[f"{data}.{o}"]["val_loss"] - 1 for o in others]
        acc = [b["val_accuracy"] - w[f"{data}.{o}"]["val_accuracy"] for o in others]
        claim(f"Conclusion ({data}): up to 20% lower loss and 5% higher accuracy than ReLU, LeakyReLU, PReLU, ELU",
              f"{best}: val loss {100 * min(loss):+.1f}…{100 * max(loss):+.1f}%, val acc "
              f"{100 * min(acc):+.2f}…{100 * max(acc):+.2f} pt", max(loss) < 0 and min(acc) > 0,
              "confirmed means better than all four; the size is in the numbers")
    s = facts[SETTINGS]
    for data in ctx.options.data:
        literal = s[f"{data}.relu.{PAPER_LR:g}"]
        claim(f"Training settings ({data}): Adam, momentum 0.9, lr 0.4 trains the CNN",
              f"first-epoch val acc {literal:.3f} with lr 0.4, {s[f'{data}.relu.{ctx.options.lr:g}']:.3f} with lr "
              f"{ctx.options.lr:g} (ReLU)", literal > 0.5, f"the recipes use lr {ctx.options.lr:g}")
    return table("The paper's claims beside ours", ("the paper says", "we measured", "verdict"), rows)


def run(ctx: Context) -> RecipeResult:
    from . import RECIPES, write_summary

    result = RecipeResult(NAME)
    sections: list[tuple[str, RecipeResult, float]] = []
    facts: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    steps: list[tuple[str, Callable[[Context], RecipeResult]]] = [
        ("toy", toy.run), ("init", init_schemes.run), ("wib", wib.run)]
    for name, step in steps:
        t0 = time.perf_counter()
        if ctx.progress is not None:
            ctx.progress.console.print(f"[bold]recipe {name}[/bold] ({RECIPES[name].figures})")
        section = step(ctx)
        section.markdown = write_summary(section, ctx.out(name))
        sections.append((name, section, time.perf_counter() - t0))
        facts[name] = section.facts
        result.runs += section.runs
        result.figures += section.figures
    t0 = time.perf_counter()
    settings_table, facts[SETTINGS] = settings_check(ctx)
    settings_seconds = time.perf_counter() - t0
    claims = _claims(ctx, facts)
    result.tables = [claims, settings_table]
    total = time.perf_counter() - started
    result.markdown = _write_report(ctx, sections, claims, settings_table, settings_seconds, total)
    return result


def _data_sources(result: RecipeResult) -> list[str]:
    from ..reader import read

    sources: dict[str, str] = {}
    for path in result.runs:
        run: Run = read(path)
        if run.attrs.get("data") in ("fashion-mnist", "cifar10"):
            sources.setdefault(str(run.attrs["data"]), str(run.attrs.get("data_source", "")))
    return [f"{name}: {source}" for name, source in sources.items()]


def _write_report(ctx: Context, sections: list[tuple[str, RecipeResult, float]], claims: Table,
                  settings_table: Table, settings_seconds: float, total: float) -> Path:
    options = ctx.options
    folder = options.out_dir
    lines = ["# actprobe recipe `paper`: the WIB-ReLU paper, reproduced", "",
             f"Made by `actprobe recipe paper` in {total / 60:.1f} min on {time.strftime('%Y-%m-%d %H:%M %Z')}.", ""]
    lines += [f"- {line}" for line in environment(ctx.device)]
    everything = RecipeResult(NAME, runs=[p for _, s, _ in sections for p in s.runs])
    lines += [f"- data: {line}" for line in _data_sources(everything)]
    lines += [f"- settings: Adam, betas (0.9, 0.999), lr {options.lr:g}, batch {options.batch_size}; init recipe "
              f"{options.iterations} iterations; wib recipe {options.epochs} epochs × {options.seeds} seed(s)"
              + (f"; REDUCED: {options.per_class} images per class" if options.per_class else ""), ""]
    lines += ["## The paper's claims beside ours", "", to_markdown(claims)]
    for name, section, seconds in sections:
        lines += [f"## Recipe `{name}` ({seconds / 60:.1f} min)", ""]
        lines += [to_markdown(t) for t in section.tables]
        lines += [f"![{figure.stem}]({figure.relative_to(folder).as_posix()})\n" for figure in section.figures]
    lines += [f"## Training settings ({settings_seconds / 60:.1f} min)", "", to_markdown(settings_table)]
    path = folder / "report.md"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
