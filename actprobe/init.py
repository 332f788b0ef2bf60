"""Named weight initialisation schemes for Conv and Linear layers, as compared in the WIB-ReLU paper.

``n`` is the layer's fan-in (input channels × kernel size, or input features).

| scheme | weights | std |
|---|---|---|
| `torch-default` | `kaiming_uniform_(a=√5)`, what PyTorch's Conv/Linear do | `1/√(3n)` |
| `sqrt3` | `kaiming_uniform_(a=√3)`: the paper's "gain √3" put where PyTorch has √5 | `1/√(2n)` |
| `kaiming` | He normal: `kaiming_normal_(mode="fan_in", nonlinearity="relu")` | `√(2/n)` |
| `eq5` | Eq. 5: `y/√n` with `y ~ N(0, 1)` | `1/√n` |
| `eq6` | Eq. 6 as printed: `2/√n` in place of `1/√n`, i.e. `2y/√n` | `2/√n` |
| `normal` | `N(0, 1)` (the toy experiments' "standard" weights) | `1` |

Reading of the paper (Section 4): PyTorch's default calls ``kaiming_uniform_(w, a=√5)``; ``a`` is
the negative slope of a leaky ReLU, and the paper calls it the "gain". The paper re-initialises
"using gain of square root of 3", so ``sqrt3`` is the same call with ``a=√3`` — the most literal
reading of the text, giving Var(w) = 1/(2n). Eq. 6 prints ``nσ²(2/√n)``: read as scaling a standard
normal ``y`` by ``2/√n`` (Var(w) = 4/n), twice the variance that the text's intent — halving n for
ReLU, He's 2/n — would give; that intent is ``kaiming``.

Biases are left as they are (PyTorch's default) unless ``zero_bias=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .errors import OptionError

LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


# The std each scheme gives a weight of fan-in n (the table above).
SCHEMES: dict[str, Callable[[int], float]] = {
    "torch-default": lambda n: 1.0 / math.sqrt(3 * n),
    "sqrt3": lambda n: 1.0 / math.sqrt(2 * n),
    "kaiming": lambda n: math.sqrt(2.0 / n),
    "eq5": lambda n: 1.0 / math.sqrt(n),
    "eq6": lambda n: 2.0 / math.sqrt(n),
    "normal": lambda n: 1.0,
}
# Schemes drawn from PyTorch's kaiming_uniform_ with this ``a`` (so their std follows from it); the
# others are normal with the std above.
UNIFORM_A = {"torch-default": math.sqrt(5), "sqrt3": math.sqrt(3)}
PAPER_SCHEMES = ("torch-default", "sqrt3", "kaiming", "eq5", "eq6")


def fan_in(weight: torch.Tensor) -> int:
    """Input channels × kernel elements (Conv), or input features (Linear)."""
    if weight.dim() < 2:
        raise OptionError(f"a weight needs at least 2 dimensions to have a fan-in, got shape {tuple(weight.shape)}")
    return int(weight.shape[1] * math.prod(weight.shape[2:]))


def expected_std(scheme: str, n: int) -> float:
    """The standard deviation that ``scheme`` gives a weight of fan-in ``n`` (the table above)."""
    _check(scheme)
    return SCHEMES[scheme](n)


def init_weights(model: nn.Module, scheme: str, *, zero_bias: bool = False,
                 generator: torch.Generator | None = None) -> int:
    """Re-initialise the weight of every Conv and Linear layer of ``model`` in place by ``scheme``.

    Returns:
        how many layers were initialised.

    Raises:
        OptionError: an unknown scheme.
    """
    _check(scheme)
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LAYERS) and getattr(module, "weight", None) is not None:
                _draw(module.weight, scheme, generator)
                if zero_bias and module.bias is not None:
                    module.bias.zero_()
                count += 1
    return count


def _draw(weight: torch.Tensor, scheme: str, generator: torch.Generator | None) -> None:
    if scheme in UNIFORM_A:
        nn.init.kaiming_uniform_(weight, a=UNIFORM_A[scheme], generator=generator)
    else:
        nn.init.normal_(weight, 0.0, SCHEMES[scheme](fan_in(weight)), generator=generator)


def _check(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise OptionError(f"unknown init scheme {scheme!r}; available: {', '.join(SCHEMES)}")
