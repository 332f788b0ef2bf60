"""Rules that turn a run's statistics into findings with advice; no rendering here.

Severities: ``info`` < ``warning`` < ``error``. Thresholds (``Rules``, all adjustable; the CLI's
``--threshold NAME=VALUE``), documented in docs/DIAGNOSE.md:

| rule | fires when | severity |
|---|---|---|
| `vanishing` | along the layer chain at the first recorded step, the std falls by a geometric-mean factor per layer below `vanishing_factor` (0.75), and falls at ≥ `steady` (75%) of the layers | error |
| `exploding` | the same factor is above `exploding_factor` (1.33), rising at ≥ `steady` of the layers | error |
| `mean-shift` | after a ReLU-like module, \\|mean\\| > `mean_shift` (0.5) × std at the first or last step | info |
| `saturation` | near-zero fraction > `saturation` (0.5), or > `saturation_zeroing` (0.75) after ReLU, ReLU6, RReLU (which output exact zeros for about half of centred inputs by design, more when the pre-activation mean is negative), at the first or last step | warning |
| `dead-units` | dead fraction > `dead` (0.1) at the last step; error above `dead_error` (0.5) | warning / error |
| `non-finite` | any NaN or ±Inf at any step | error |
| `drift` | with ≥ `drift_min_rows` (10) rows, a site's std (median over the first and last `drift_window`, 10%, of the rows) changes by more than ×`drift_factor` (5) either way; the last site (the model's output) is left out | warning |

The layer chain is the activation sites when there are at least two, else the Conv/Linear sites
(``actprobe.analysis.roles.layer_chain``); a chain of fewer than ``min_layers`` (3) skips the two
chain rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .._checks import non_negative
from ..errors import OptionError
from ..runfile.format import NEAR_ZERO_EPS
from ..runfile.reader import Run
from .roles import RELU_LIKE, ZEROING, layer_chain
from .rows import distinct_first_and_last
from .summary import as_stored

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True, kw_only=True)
class Rules:
    """The thresholds of the rules; see the module docstring."""

    vanishing_factor: float = 0.75
    exploding_factor: float = 1.33
    steady: float = 0.75
    min_layers: int = 3
    mean_shift: float = 0.5
    saturation: float = 0.5
    saturation_zeroing: float = 0.75
    dead: float = 0.1
    dead_error: float = 0.5
    drift_factor: float = 5.0
    drift_window: float = 0.1
    drift_min_rows: int = 10

    def __post_init__(self) -> None:
        for f in fields(self):
            non_negative(f"threshold {f.name}", getattr(self, f.name))

    @classmethod
    def parse(cls, assignments: list[str]) -> Rules:
        """``["drift_factor=3", …]`` → Rules; unknown names and bad values are ``OptionError``."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in assignments:
            name, sep, text = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in known:
                raise OptionError(f"--threshold {item!r}: use NAME=VALUE with NAME one of {', '.join(known)}")
            try:
                values[name] = int(text) if known[name] in ("int", int) else float(text)
            except ValueError:
                raise OptionError(f"--threshold {item!r}: {text!r} is not a number") from None
        return cls(**values)


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a run: which rule, how bad, where, when, the evidence and what to do."""

    rule: str
    severity: str
    sites: tuple[str, ...]
    steps: tuple[int, ...]
    message: str
    advice: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sites"], data["steps"] = list(self.sites), list(self.steps)
        return data


def rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def diagnose(run: Run, rules: Rules | None = None) -> list[Finding]:
    """Every finding of every rule, most severe first (then in rule order)."""
    rules = rules or Rules()
    if run.rows == 0:
        return []
    found: list[Finding] = []
    for check in (_chain, _mean_shift, _saturation, _dead, _non_finite, _drift):
        found.extend(check(run, rules))
    return sorted(found, key=lambda f: -rank(f.severity))


def _stat(run: Run, name: str, row: int, column: int) -> float:
    return float(run.stats[name][row, column])


def _chain(run: Run, rules: Rules) -> list[Finding]:
    chain = layer_chain(run)
    stds = np.array([_stat(run, "std", 0, c) for c in chain], dtype=np.float64)
    keep = np.isfinite(stds) & (stds > 0)
    chain, stds = [c for c, k in zip(chain, keep) if k], stds[keep]
    if len(chain) < rules.min_layers:
        return []
    ratios = stds[1:] / stds[:-1]
    factor = float((stds[-1] / stds[0]) ** (1.0 / (len(stds) - 1)))
    names = tuple(run.sites[c] for c in chain)
    evidence = {"std": [round(float(s), 6) for s in stds], "factor_per_layer": round(factor, 4)}
    step = (int(run.step[0]),)
    profile = " → ".join(f"{s:.3g}" for s in stds)
    if factor < rules.vanishing_factor and np.mean(ratios < 1) >= rules.steady:
        return [Finding(
            "vanishing", "error", names, step,
            f"vanishing activations: at step {step[0]} the std falls ×{factor:.2f} per layer over {len(stds)} layers "
            f"({profile}), ×{stds[-1] / stds[0]:.2g} in all",
            "the init gain is too small — PyTorch's default kaiming_uniform_(a=√5) gives Var(w) = 1/(3·fan_in), "
            "a std ×0.41 per conv+ReLU layer: use Kaiming/He init (nn.init.kaiming_normal_(w, nonlinearity='relu'), "
            "or actprobe.init.init_weights(model, 'kaiming')), or add normalisation layers", evidence)]
    if factor > rules.exploding_factor and np.mean(ratios > 1) >= rules.steady:
        return [Finding(
            "exploding", "error", names, step,
            f"exploding activations: at step {step[0]} the std grows ×{factor:.2f} per layer over {len(stds)} layers "
            f"({profile}), ×{stds[-1] / stds[0]:.3g} in all",
            "the init gain is too large: use Kaiming/He init for ReLU networks (std √(2/fan_in)) or Xavier for "
            "tanh, and check for weights scaled up by hand; normalisation layers also bound it", evidence)]
    return []


def _mean_shift(run: Run, rules: Rules) -> list[Finding]:
    sites, steps, worst = [], set(), 0.0
    for c, kind in enumerate(run.site_module_types):
        if kind not in RELU_LIKE:
            continue
        hit = False
        for row in distinct_first_and_last(run):
            mean, std = _stat(run, "mean", row, c), _stat(run, "std", row, c)
            if std > 0 and abs(mean) > rules.mean_shift * std:
                hit = True
                steps.add(int(run.step[row]))
                worst = max(worst, abs(mean) / std)
        if hit:
            sites.append(run.sites[c])
    if not sites:
        return []
    return [Finding(
        "mean-shift", "info", tuple(sites), tuple(sorted(steps)),
        f"mean shift after ReLU-like layers: |mean| up to {worst:.2f} std at {len(sites)} site(s); the next layer "
        "sees inputs that are not centred",
        "a mean-centred activation such as WIB-ReLU (actprobe.nn.WIBReLU) or a normalisation layer "
        "(BatchNorm/LayerNorm) after the activation centres them",
        {"max_mean_over_std": round(worst, 4)})]


def _saturation(run: Run, rules: Rules) -> list[Finding]:
    sites, steps, values = [], set(), {}
    for c, kind in enumerate(run.site_module_types):
        limit = rules.saturation_zeroing if kind in ZEROING else rules.saturation
        for row in distinct_first_and_last(run):
            value = _stat(run, "near_zero", row, c)
            if value > as_stored(limit):
                if run.sites[c] not in values:
                    sites.append(run.sites[c])
                steps.add(int(run.step[row]))
                values[run.sites[c]] = max(values.get(run.sites[c], 0.0), round(value, 4))
    if not sites:
        return []
    shown = ", ".join(f"{s} {100 * values[s]:.0f}%" for s in sites[:6]) + (" …" if len(sites) > 6 else "")
    return [Finding(
        "saturation", "warning", tuple(sites), tuple(sorted(steps)),
        f"saturation: most activations are near zero (|x| ≤ {run.attrs.get('near_zero_eps', NEAR_ZERO_EPS)}) at "
        f"{len(sites)} site(s): {shown}",
        "the signal is too small to carry information: check the init gain (see vanishing), the input scaling "
        "(standardise inputs to mean 0, std 1), and the learning rate",
        {"near_zero": values})]


def _dead(run: Run, rules: Rules) -> list[Finding]:
    row = run.rows - 1
    values = {}
    for c in range(len(run.sites)):
        value = _stat(run, "dead", row, c)
        if value == value and value > as_stored(rules.dead):
            values[run.sites[c]] = round(value, 4)
    if not values:
        return []
    worst = max(values.values())
    severity = "error" if worst > as_stored(rules.dead_error) else "warning"
    shown = ", ".join(f"{s} {100 * v:.0f}%" for s, v in list(values.items())[:6])
    return [Finding(
        "dead-units", severity, tuple(values), (int(run.step[row]),),
        f"dead units: units whose output never varies over the batch at step {int(run.step[row])}: {shown}",
        "lower the learning rate, use LeakyReLU/PReLU/ELU or WIB-ReLU, check for large negative biases, or "
        "re-initialise the layer",
        {"dead": values})]


def _non_finite(run: Run, rules: Rules) -> list[Finding]:
    bad = run.stats["nonfinite"] > 0
    if not bad.any():
        return []
    rows, columns = np.nonzero(bad)
    first_row = int(rows.min())
    origin = [run.sites[c] for c in np.flatnonzero(bad[first_row])]
    sites = [run.sites[c] for c in sorted(set(columns.tolist()))]
    return [Finding(
        "non-finite", "error", tuple(sites), (int(run.step[first_row]),),
        f"non-finite values (NaN/Inf): first at step {int(run.step[first_row])} in {', '.join(origin[:4])}"
        f"{' …' if len(origin) > 4 else ''}; {len(sites)} site(s), {int(bad.any(axis=1).sum())} recorded step(s) "
        "in all",
        "look at the first site that had them: a too-large learning rate, a log/sqrt/division of zero, or "
        "overflow in low precision; torch.autograd.set_detect_anomaly(True) finds the operation",
        {"first_step": int(run.step[first_row]), "first_sites": origin, "steps_with_nonfinite":
         int(bad.any(axis=1).sum())})]


def _drift(run: Run, rules: Rules) -> list[Finding]:
    if run.rows < rules.drift_min_rows:
        return []
    window = max(1, int(round(rules.drift_window * run.rows)))
    std = run.stats["std"].astype(np.float64)
    start = np.nanmedian(std[:window], axis=0) if np.isfinite(std[:window]).any() else None
    end = np.nanmedian(std[-window:], axis=0) if np.isfinite(std[-window:]).any() else None
    if start is None or end is None:
        return []
    values = {}
    for c in range(len(run.sites) - 1):  # not the model's output: logits are meant to grow as it learns
        a, b = start[c], end[c]
        if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b):
            ratio = b / a
            if ratio > rules.drift_factor or ratio < 1.0 / rules.drift_factor:
                values[run.sites[c]] = round(float(ratio), 4)
    if not values:
        return []
    shown = ", ".join(f"{s} ×{v:.3g}" for s, v in list(values.items())[:6])
    return [Finding(
        "drift", "warning", tuple(values), (int(run.step[0]), int(run.step[-1])),
        f"drift: the std changed by more than ×{rules.drift_factor:g} over training (median of the first vs the "
        f"last {window} recorded steps): {shown}",
        "activations that keep growing or shrinking during training point to a too-high learning rate or "
        "missing normalisation; lower the lr, add warm-up or weight decay, or normalise",
        {"std_ratio": values})]
