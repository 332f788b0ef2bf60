"""Parameters and their updates: statistics of each parameter tensor's values and gradient just
before the optimizer's step, and of the step's change Δw, through the optimizer's step hooks.

Only recorded steps do any work: the pre-hook computes the values' moments and keeps a copy of each
parameter (what Δw needs, and nothing more: it is dropped in the post-hook); the post-hook computes the
gradients' moments and Δw = w_after − w_before and its moments. The gradient is read after the step,
not before it: an optimizer given a closure (Lightning's) computes the gradient inside ``step``; a step
leaves ``.grad`` as it found it. The update-to-data ratio of a step is
``update_stats/std / param_stats/std``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..errors import OptionError
from .sites import is_sharded, local_part

Observe = Callable[[int, int, torch.Tensor], None]  # (group: 0 values, 1 gradient, 2 update; parameter; tensor)
VALUES, GRADIENT, UPDATE = 0, 1, 2


def parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[tuple[str, int]]:
    """The names (``model.named_parameters()``) and numbers of dimensions of the optimizer's parameters,
    in its order; a parameter the model does not own is ``param_group<g>.<k>``."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise OptionError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    names: Mapping[int, str] = {id(p): name for name, p in model.named_parameters()}
    return [(names.get(id(p), f"param_group{g}.{k}"), p.ndim) for g, group in enumerate(optimizer.param_groups)
            for k, p in enumerate(group["params"])]


class ParamWatch:
    """The optimizer's step hooks, recording only while ``recording()`` is true."""

    def __init__(self, optimizer: torch.optim.Optimizer, observe: Observe, recording: Callable[[], bool],
                 on_error: Callable[[Exception], None]) -> None:
        self._params = [p for group in optimizer.param_groups for p in group["params"]]
        self._observe, self._recording, self._on_error = observe, recording, on_error
        self._before: list[torch.Tensor | None] | None = None
        self._handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    @property
    def sharded(self) -> list[bool]:
        """Which parameters this rank holds a shard of (FSDP2's DTensors), in the optimizer's order; the
        others it holds whole (DDP's replicas)."""
        return [is_sharded(p) for p in self._params]

    def _pre(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        self._before = None
        if not self._recording():
            return
        try:
            with torch.no_grad():
                before: list[torch.Tensor | None] = []
                for index, p in enumerate(self._params):
                    local = local_part(p.detach())  # FSDP2's DTensor parameters: this rank's shard
                    if local is None:  # pending reductions: nothing this rank can read alone
                        before.append(None)
                        continue
                    self._observe(VALUES, index, local)
                    before.append(local.clone())
            self._before = before
        except Exception as exc:  # never into the user's optimizer step
            self._on_error(exc)

    def _post(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        before, self._before = self._before, None
        if before is None or not self._recording():
            return
        try:
            with torch.no_grad():
                for index, (p, old) in enumerate(zip(self._params, before)):
                    local = local_part(p.detach())
                    if old is None or local is None:
                        continue
                    grad = None if p.grad is None else local_part(p.grad)
                    if grad is not None:
                        self._observe(GRADIENT, index, grad)
                    self._observe(UPDATE, index, local - old)
        except Exception as exc:
            self._on_error(exc)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._before = None
