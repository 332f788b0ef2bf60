"""The hook engine: forward hooks on the selected modules, numbered per forward.

Hooks return ``None`` and only read detached outputs, so the model computes exactly what it would
without them. The hooks keep the engine (and so the probe) alive while they are attached, as
PyTorch hooks keep their closures; the engine holds the model only through a weak reference, and
removing the handles leaves nothing behind.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

# on_call(module_name, call_index, module, inputs, output); inputs = (args, kwargs) of the call
OnCall = Callable[[str, int, nn.Module, object, object], None]


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
        self._capturing = False
        self.active = True
        self.skipped = 0  # calls left out by train_only (eval mode, or gradients disabled)
        self._handles: list[RemovableHandle] = [
            model.register_forward_pre_hook(torch.compiler.disable(self._new_forward))]
        self._by_name: dict[str, RemovableHandle] = {}
        for name, module in modules:
            handle = module.register_forward_hook(self._hook_for(name), with_kwargs=True)
            self._handles.append(handle)
            self._by_name[name] = handle

    def _new_forward(self, module: nn.Module, args: object) -> None:
        self._calls.clear()
        # A forward captured into a CUDA graph is not recorded: its replays would not call the hooks,
        # and kernels captured into the graph would write into buffers nobody reads any more.
        self._capturing = torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing()

    def _hook_for(self, name: str) -> Callable[[nn.Module, object, object, object], None]:
        # torch.compile must not trace the hooks (their bookkeeping would make it recompile at
        # every call): each runs eagerly, at a graph break, on the output the compiled code made.
        @torch.compiler.disable
        def hook(module: nn.Module, args: object, kwargs: object, output: object) -> None:
            if self.active and not self._capturing:
                self._called(name, module, (args, kwargs), output)
        return hook

    def _called(self, name: str, module: nn.Module, inputs: object, output: object) -> None:
        if self._train_only:
            root = self._root()
            if root is None or not root.training or not torch.is_grad_enabled():
                self.skipped += 1
                return
        index = self._calls.get(name, 0)
        self._calls[name] = index + 1
        self._on_call(name, index, module, inputs, output)

    def new_step(self) -> None:
        self._calls.clear()

    def unhook(self, names: Sequence[str]) -> None:
        """Remove the hooks of these modules (containers whose outputs their children produce)."""
        for name in names:
            handle = self._by_name.pop(name, None)
            if handle is not None:
                handle.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.active = False
