"""WIB-ReLU, the activation of the WIB-ReLU paper: ``a = max(0, z) − μ``, and its calibration.

Two modes, as the paper's text allows two readings:

- ``fixed``: μ is measured once, at initialisation, from calibration batches as in the paper's
  Eq. 7 (the average of the batch means of ``max(0, z)`` over n batches), and then kept constant.
  It is a buffer, so it is saved in ``state_dict``. Call ``calibrate(model, batches)`` before
  training; an uncalibrated fixed WIBReLU behaves as a plain ReLU (μ = 0).
- ``batch``: "subtract the mean value of the iteration": in training the mean of the current
  batch's ``max(0, z)`` (gradients flow through it, as through BatchNorm's mean); in eval a
  running mean updated with ``momentum``, like BatchNorm without a scale.

μ is one number per module (the mean over every element of the output), as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .errors import OptionError

MODES = ("fixed", "batch")


class WIBReLU(nn.Module):
    """``relu(z) − μ``; see the module docstring for the ``fixed`` and ``batch`` modes.

    Args:
        mode: ``"fixed"`` or ``"batch"``.
        mu: the initial μ (fixed mode) or running mean (batch mode).
        momentum: batch mode: weight of the newest batch mean in the running mean.
    """

    mu: torch.Tensor
    running_mean: torch.Tensor

    def __init__(self, mode: str = "fixed", *, mu: float = 0.0, momentum: float = 0.1) -> None:
        super().__init__()
        if mode not in MODES:
            raise OptionError(f"WIBReLU mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0.0 < momentum <= 1.0:
            raise OptionError(f"WIBReLU momentum must be in (0, 1], got {momentum!r}")
        self.mode = mode
        self.momentum = momentum
        self.register_buffer("mu", torch.tensor(float(mu)))
        self.register_buffer("running_mean", torch.tensor(float(mu)))
        self._measuring: list[torch.Tensor] | None = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        positive = torch.relu(z)
        if self._measuring is not None:  # calibration: record this batch's mean, pass relu through
            self._measuring.append(positive.detach().mean(dtype=torch.float64))
            return positive
        if self.mode == "fixed":
            return positive - self.mu.to(positive.dtype)
        if self.training:
            mean = positive.mean()
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            return positive - mean
        return positive - self.running_mean.to(positive.dtype)

    def extra_repr(self) -> str:
        value = self.mu if self.mode == "fixed" else self.running_mean
        return f"mode={self.mode!r}, mu={float(value):.4g}"


def calibrate(model: nn.Module, batches: Iterable[Any], *, forward: Callable[[nn.Module, Any], Any] | None = None
              ) -> dict[str, float]:
    """Set μ of every WIBReLU in ``model`` by the paper's Eq. 7: the average of the batch means.

    Layers are calibrated in the order they are called, each with the layers before it already
    calibrated, so every μ is measured on the inputs it will see. The model runs in eval mode under
    ``torch.no_grad()`` (its mode is restored). ``batches`` is iterated once per WIBReLU, so it must
    be re-iterable (a list of batches, or a loader); a batch is an input tensor or an
    ``(inputs, targets)`` pair, unless ``forward(model, batch)`` says how to run it.
    Both modes are set: μ for ``fixed``, the running mean for ``batch``.

    Returns:
        μ of each WIBReLU, by module name, in call order.

    Raises:
        OptionError: the model has no WIBReLU, or ``batches`` is empty.
    """
    modules = {name: m for name, m in model.named_modules() if isinstance(m, WIBReLU)}
    if iter(batches) is batches:
        raise OptionError("calibrate: batches must be re-iterable (a list of batches or a loader), "
                          "not an iterator or generator")
    if not modules:
        raise OptionError("calibrate: the model has no WIBReLU module")
    run = forward or _default_forward
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            order = _call_order(model, modules, batches, run)
            result: dict[str, float] = {}
            for name in order:
                module = modules[name]
                module._measuring = []
                try:
                    for batch in batches:
                        run(model, batch)
                    means = module._measuring
                finally:
                    module._measuring = None
                if not means:
                    raise OptionError("calibrate: no batches to calibrate on")
                mu = torch.stack(means).mean()
                module.mu.fill_(mu)
                module.running_mean.fill_(mu)
                result[name] = float(mu)
    finally:
        model.train(was_training)
    return result


def _default_forward(model: nn.Module, batch: Any) -> Any:
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    return model(inputs)


def _call_order(model: nn.Module, modules: dict[str, WIBReLU], batches: Iterable[Any],
                run: Callable[[nn.Module, Any], Any]) -> list[str]:
    order: list[str] = []
    names = {id(m): name for name, m in modules.items()}
    handles = [m.register_forward_hook(lambda mod, _i, _o: order.append(names[id(mod)])) for m in modules.values()]
    try:
        for batch in batches:
            run(model, batch)
            break
        else:
            raise OptionError("calibrate: no batches to calibrate on")
    finally:
        for handle in handles:
            handle.remove()
    called = list(dict.fromkeys(order))
    return called + [name for name in modules if name not in called]


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky-relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "wib-relu-fixed": lambda: WIBReLU("fixed"),
    "wib-relu-batch": lambda: WIBReLU("batch"),
}


def make_activation(name: str) -> nn.Module:
    """A new activation module by its recipe name (``relu``, ``leaky-relu``, ``prelu``, ``elu``,
    ``wib-relu-fixed``, ``wib-relu-batch``), with PyTorch's default parameters."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise OptionError(f"unknown activation {name!r}; available: {', '.join(ACTIVATIONS)}") from None
