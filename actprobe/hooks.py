"""The hook engine: forward hooks on the selected modules, numbered per forward.

Hooks return ``None`` and only read detached outputs, so the model computes exactly what it would
without them. They hold the model only through weak references: removing the handles leaves
nothing behind.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

# on_call(module_name, call_index, module, output)
OnCall = Callable[[str, int, nn.Module, object], None]


class HookEngine:
    """Attaches one forward hook per selected module and a pre-hook on the root.

    A module's calls are numbered from 0 within each forward of the root (and within each step,
    for models whose submodules are called directly). With ``train_only``, calls made while the
    root is in eval mode or while gradients are disabled are skipped.
    """

    def __init__(self, model: nn.Module, modules: Sequence[tuple[str, nn.Module]], on_call: OnCall,
                 *, train_only: bool) -> None:
        self._root = weakref.ref(model)
        self._on_call = on_call
        self._train_only = train_only
        self._calls: dict[str, int] = {}
        self.active = True
        engine = weakref.ref(self)

        def new_forward(module: nn.Module, args: object) -> None:
            self_ = engine()
            if self_ is not None:
                self_._calls.clear()
        self._handles: list[RemovableHandle] = [model.register_forward_pre_hook(new_forward)]
        for name, module in modules:
            self._handles.append(module.register_forward_hook(self._hook_for(name)))

    def _hook_for(self, name: str) -> Callable[[nn.Module, object, object], None]:
        engine = weakref.ref(self)

        def hook(module: nn.Module, args: object, output: object) -> None:
            self_ = engine()
            if self_ is not None and self_.active:
                self_._called(name, module, output)
        return hook

    def _called(self, name: str, module: nn.Module, output: object) -> None:
        if self._train_only:
            root = self._root()
            if root is None or not root.training or not torch.is_grad_enabled():
                return
        index = self._calls.get(name, 0)
        self._calls[name] = index + 1
        self._on_call(name, index, module, output)

    def new_step(self) -> None:
        self._calls.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.active = False
