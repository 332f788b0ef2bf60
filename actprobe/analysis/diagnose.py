"""``diagnose``: the rule engine's observations grouped by rule into findings with advice.

The observations are ``rules.evaluate``'s, the same that ``show`` groups by site; this module only
words them. Advice fits what was found: it never points to a finding the run does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..runfile.format import NEAR_ZERO_EPS
from ..runfile.reader import Run
from .rules import RULES, SEVERITIES, Observation, evaluate, percent, rank, untrained
from .thresholds import Thresholds

Rules = Thresholds  # the name diagnose's thresholds had before the one table (actprobe 0.1)

__all__ = ["SEVERITIES", "Finding", "Rules", "Thresholds", "diagnose", "findings_of", "rank"]


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


def diagnose(run: Run, thresholds: Thresholds | None = None) -> list[Finding]:
    """Every finding, most severe first (then in rule order)."""
    return findings_of(run, evaluate(run, thresholds), thresholds or Thresholds())


def findings_of(run: Run, observations: Sequence[Observation], thresholds: Thresholds) -> list[Finding]:
    """Group ``observations`` by rule (and, for dead units, by situation) into worded findings."""
    groups: dict[tuple[str, str], list[Observation]] = {}
    for obs in observations:
        groups.setdefault((obs.rule, str(obs.evidence.get("kind", ""))), []).append(obs)
    fired = {rule for rule, _ in groups}
    found = []
    for (rule, kind), group in groups.items():
        message, advice, evidence = _WORDING[rule](run, group, fired, thresholds)
        severity = max((o.severity for o in group), key=rank)
        steps = tuple(sorted({s for o in group for s in o.steps}))
        found.append(Finding(rule, severity, tuple(o.site for o in group), steps, message, advice, evidence))
    order = {rule.name: k for k, rule in enumerate(RULES)}
    return sorted(found, key=lambda f: (-rank(f.severity), order[f.rule]))


def _shown(group: Sequence[Observation], text: Callable[[Observation], str], limit: int = 6) -> str:
    return ", ".join(f"{o.site} {text(o)}" for o in group[:limit]) + (" …" if len(group) > limit else "")


def _path(run: Run, group: Sequence[Observation], fired: set[str], t: Thresholds) -> tuple[str, str, dict[str, Any]]:
    paths: dict[tuple[str, ...], Observation] = {}
    for obs in group:
        paths.setdefault(tuple(obs.evidence["path"]), obs)
    worst = min(paths.values(), key=lambda o: o.value) if group[0].rule == "vanishing" else \
        max(paths.values(), key=lambda o: o.value)
    stds = worst.evidence["std"]
    step, layers, factor = worst.steps[0], len(stds), worst.value
    profile = " → ".join(f"{s:.3g}" for s in stds)
    more = f" ({len(paths)} paths; the worst shown)" if len(paths) > 1 else ""
    evidence = {"std": stds, "factor_per_layer": round(factor, 4), "path": list(worst.evidence["path"]),
                "paths": len(paths)}
    if group[0].rule == "vanishing":
        return (f"vanishing activations: at step {step} the std falls ×{factor:.2f} per layer over {layers} layers "
                f"({profile}), ×{stds[-1] / stds[0]:.2g} in all{more}",
                "the init gain is too small — PyTorch's default kaiming_uniform_(a=√5) gives Var(w) = 1/(3·fan_in), "
                "a std ×0.41 per conv+ReLU layer: use Kaiming/He init (nn.init.kaiming_normal_(w, nonlinearity="
                "'relu'), or actprobe.init.init_weights(model, 'kaiming')), or add normalisation layers", evidence)
    return (f"exploding activations: at step {step} the std grows ×{factor:.2f} per layer over {layers} layers "
            f"({profile}), ×{stds[-1] / stds[0]:.3g} in all{more}",
            "the init gain is too large: use Kaiming/He init for ReLU networks (std √(2/fan_in)) or Xavier for "
            "tanh, and check for weights scaled up by hand; normalisation layers also bound it", evidence)


def _gradient_path(run: Run, group: Sequence[Observation], fired: set[str], t: Thresholds) -> tuple[str, str, dict]:
    paths: dict[tuple[str, ...], Observation] = {}
    for obs in group:
        paths.setdefault(tuple(obs.evidence["path"]), obs)
    falls = group[0].rule == "vanishing-gradient"
    worst = (min if falls else max)(paths.values(), key=lambda o: o.value)
    sizes, factor, step = worst.evidence["size"], worst.value, worst.steps[0]
    profile = " ← ".join(f"{s:.3g}" for s in sizes)
    more = f" ({len(paths)} paths; the worst shown)" if len(paths) > 1 else ""
    healthy = worst.evidence["activations_healthy"]
    evidence = {"size": sizes, "factor_per_layer": round(factor, 4), "path": list(worst.evidence["path"]),
                "paths": len(paths), "activations_healthy": healthy}
    forward = ("; the activations along it keep their scale: the backward pass loses what the forward keeps"
               if healthy else "; the activations along it vanish or explode too (see vanishing/exploding)")
    if falls:
        return (f"vanishing gradients: at step {step} the gradient shrinks ×{factor:.2f} per layer on its way back "
                f"over {len(sizes)} layers ({profile}), ×{sizes[0] / sizes[-1]:.2g} at the first layer{more}{forward}",
                ("the early layers barely learn. Fix the init gain first (see vanishing): Kaiming/He init" if not healthy
                 else "the early layers barely learn: check for saturating activations (sigmoid, tanh) on the path, "
                 "add normalisation or residual connections, or use Kaiming/He init"), evidence)
    return (f"exploding gradients: at step {step} the gradient grows ×{factor:.2f} per layer on its way back over "
            f"{len(sizes)} layers ({profile}), ×{sizes[0] / sizes[-1]:.3g} at the first layer{more}{forward}",
            "the early layers take the largest steps: lower the init gain or the learning rate, clip gradients "
            "(torch.nn.utils.clip_grad_norm_), or add normalisation", evidence)


def _update_ratio(run: Run, group: Sequence[Observation], fired: set[str], t: Thresholds) -> tuple[str, str, dict]:
    small = group[0].evidence["kind"] == "small"
    listed = _shown(group, lambda o: f"{o.value:.2g}")
    evidence = {"update_ratio": {o.site: float(f"{o.value:.4g}") for o in group}}
    if small:
        cause = ("the gradient vanishes before these layers (see vanishing-gradient)" if "vanishing-gradient" in fired
                 else "the learning rate is too small for them")
        return (f"parameters that barely move: update-to-data ratio below {t.update_ratio_low:g} (the median over "
                f"the recorded steps): {listed}",
                f"{cause}; a ratio near 1e-3 is the usual rule of thumb", evidence)
    return (f"parameters that move too far each step: update-to-data ratio above {t.update_ratio_high:g}: {listed}",
            "lower the learning rate or warm it up; check for exploding gradients (see exploding-gradient)", evidence)


def _mean_shift(run: Run, group: Sequence[Observation], fired: set[str], t: Thresholds) -> tuple[str, str, dict]:
    worst = max(o.value for o in group)
    return (f"mean shift after ReLU-like layers: |mean| up to {worst:.2f} std at {len(group)} site(s); the next "
            "layer sees inputs that are not centred",
            "a mean-centred activation such as WIB-ReLU (actprobe.nn.WIBReLU) or a normalisation layer "
            "(BatchNorm/LayerNorm) after the activation centres them", {"max_mean_over_std": round(worst, 4)})


def _saturation(run: Run, group: Sequence[Observation], fired: set[str], t: Thresholds) -> tuple[str, str, dict]:
    eps = run.attrs.get("near_zero_eps", NEAR_ZERO_EPS)
    evidence = {"near_zero": {o.site: round(o.value, 4) for o in group}}
    if group[0].evidence.get("kind") == "healed":
        return (f"saturation at initialisation only: most outputs were near zero (|x| ≤ {eps}) at the first "
                f"recorded step and no longer at the last, at {len(group)} site(s): {_shown(group, lambda o: percent(o.value))}",
                "training grew out of it (a small init, such as a classifier initialised near zero, does this); "
                "nothing to do unless training is slow to start", evidence)
    cause = ("the signal shrinks layer by layer (see vanishing): fix the init gain first"
             if "vanishing" in fired else "the signal is too small to carry information: check the init gain "
             "(Kaiming/He for ReLU networks)")
    trained = "" if untrained(run) else ", and the learning rate"
    return (f"saturation: most activations are near zero (|x| ≤ {eps}) at {len(group)} site(s): "
            f"{_shown(group, lambda o: percent(o.value))}",
            f"{cause}, the input scaling (standardise inputs to mean 0, std 1){trained}", evidence)


_DEAD_ADVICE = {
    "constant-at-init": "a Conv/Linear whose output is one value before training has zero weights: fine for a "
                        "head initialised to zero on purpose (it learns from the first step); otherwise "
                        "initialise its weights",
    "at-init": "units dead before any training: a large negative bias or a too-small init gain puts every "
               "pre-activation below zero; check the biases and the init (Kaiming/He), or use LeakyReLU, "
               "PReLU, ELU or WIB-ReLU",
    "trained": "lower the learning rate, use LeakyReLU/PReLU/ELU or WIB-ReLU, check for large negative biases, "
               "or re-initialise the layer",
}


def _dead(run: Run, group: Sequence[Observation], fired: set[str], t: Thresholds) -> tuple[str, str, dict]:
    kind, step = group[0].evidence["kind"], group[0].steps[0]
    if kind == "constant-at-init":
        what = f"constant output at initialisation (step {step}, before any training): {', '.join(o.site for o in group[:6])}"
    else:
        when = "before any training" if kind == "at-init" else "after training"
        what = (f"dead units: units whose output never varies over the batch at step {step} ({when}): "
                f"{_shown(group, lambda o: percent(o.value))}")
    advice = _DEAD_ADVICE[kind]
    if kind == "at-init" and "vanishing" in fired:
        advice = ("the signal has vanished by these layers (see vanishing), so the biases alone decide whether "
                  "a unit fires: fix the init gain first (Kaiming/He)")
    return what, advice, {"dead": {o.site: round(o.value, 4) for o in group}}


def _non_finite(run: Run, group: Sequence[Observation], fired: set[str], t: Thresholds) -> tuple[str, str, dict]:
    origin = [o.site for o in group if o.evidence["origin"]]
    first = min(s for o in group for s in o.steps)
    rows = group[0].evidence["rows_with_nonfinite"]
    return (f"non-finite values (NaN/Inf): first at step {first} in {', '.join(origin[:4])}"
            f"{' …' if len(origin) > 4 else ''}; {len(group)} site(s), {rows} recorded step(s) in all",
            "look at the first site that had them: a too-large learning rate, a log/sqrt/division of zero, or "
            "overflow in low precision; torch.autograd.set_detect_anomaly(True) finds the operation",
            {"first_step": first, "first_sites": origin, "steps_with_nonfinite": rows})


def _drift(run: Run, group: Sequence[Observation], fired: set[str], t: Thresholds) -> tuple[str, str, dict]:
    window, first = group[0].evidence["window"], group[0].evidence["first"]
    return (f"drift: the std changed by more than ×{t.drift_factor:g} over training (median of {window} recorded "
            f"steps from step {int(run.step[first])} vs the last {window}): {_shown(group, lambda o: f'×{o.value:.3g}')}",
            "activations that keep growing or shrinking during training point to a too-high learning rate or "
            "missing normalisation; lower the lr, add warm-up or weight decay, or normalise",
            {"std_ratio": {o.site: round(o.value, 4) for o in group}})


def _rank_outlier(run: Run, group: Sequence[Observation], fired: set[str], t: Thresholds) -> tuple[str, str, dict]:
    ranks = sorted({r for o in group for r in o.evidence["ranks"]})
    return (f"ranks that differ: values on another scale than the other ranks' (× {t.rank_factor:g} or more) "
            f"first at {_shown(group, lambda o: o.detail)}",
            "the ranks should see data of the same kind: check the data loading and sharding of rank "
            f"{', '.join(map(str, ranks))} (`actprobe show RUN --rank R` shows one rank's own statistics)",
            {"ranks": ranks, "scale_ratio": {o.site: round(o.value, 4) for o in group}})


_WORDING = {"vanishing": _path, "exploding": _path, "vanishing-gradient": _gradient_path,
            "exploding-gradient": _gradient_path, "update-ratio": _update_ratio, "mean-shift": _mean_shift, "saturation": _saturation,
            "dead-units": _dead, "non-finite": _non_finite, "drift": _drift,
            "rank-outlier": _rank_outlier}
