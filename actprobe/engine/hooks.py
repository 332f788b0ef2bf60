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

from .eager import eager_only

# on_call(module_name, call_index, module, inputs, output); inputs = (args, kwargs) of the call
OnCall = Callable[[str, int, nn.Module, object, object], None]
OnError = Callable[[Exception], None]


class HookEngine:
    """Attaches one forward hook per selected module and a pre-hook on the root.

    A module's calls are numbered from 0 within each forward of the root (and within each step,
    for models whose submodules are called directly). With ``train_only``, calls made while the
    root is in eval mode or while gradients are disabled are skipped. An exception raised by
    ``on_call`` goes to ``on_error``, never into the model's forward.
    """

    def __init__(self, model: nn.Module, modules: Sequence[tuple[str, nn.Module]], on_call: OnCall,
                 on_error: OnError, *, train_only: bool) -> None:
        self._root = weakref.ref(model)
        self._on_call = on_call
        self._on_error = on_error
        self._train_only = train_only
        self._calls: dict[str, int] = {}
        self._capturing = False
        self.active = True
        self.skipped = 0  # calls left out by train_only (eval mode, or gradients disabled)
        self._model = weakref.ref(model)
        self._modules = [(name, weakref.ref(module)) for name, module in modules]
        self._pre_hook = eager_only(self._new_forward)
        self._hooks = {name: self._hook_for(name) for name, _ in modules}
        self._root_handle: RemovableHandle | None = None
        self._handles: dict[str, RemovableHandle] = {}
        self.attach()

    def _new_forward(self, module: nn.Module, args: object) -> None:
        self._calls.clear()
        # A forward captured into a CUDA graph is not recorded: its replays would not call the hooks,
        # and kernels captured into the graph would write into buffers nobody reads any more.
        self._capturing = torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing()

    def _hook_for(self, name: str) -> Callable[[nn.Module, object, object, object], None]:
        # torch.compile must not trace the hooks (their bookkeeping would make it recompile at
        # every call): each runs eagerly, at a graph break, on the output the compiled code made.
        # The body runs once per recorded module call: kept flat, one Python call into the recorder.
        def hook(module: nn.Module, args: object, kwargs: object, output: object) -> None:
            if not self.active or self._capturing:
                return
            if self._train_only:
                root = self._root()
                if root is None or not root.training or not torch.is_grad_enabled():
                    self.skipped += 1
                    return
            calls = self._calls
            index = calls.get(name, 0)
            calls[name] = index + 1
            try:
                self._on_call(name, index, module, (args, kwargs), output)
            except Exception as exc:
                self._on_error(exc)
        return eager_only(hook)

    def new_step(self) -> None:
        self._calls.clear()

    @property
    def attached(self) -> bool:
        return self._root_handle is not None

    def attach(self) -> None:
        """Register the hooks that are not registered. Steps that are not recorded run without them
        (``detach``): a module with no hooks takes PyTorch's fast call path, so they cost nothing."""
        model = self._model()
        if model is None or self._root_handle is not None:  # attached already (called every recorded step)
            return
        self._root_handle = model.register_forward_pre_hook(self._pre_hook)
        for name, ref in self._modules:
            module = ref()
            if module is not None and name not in self._handles:
                self._handles[name] = module.register_forward_hook(self._hooks[name], with_kwargs=True)

    def detach(self, *, all_hooks: bool = False) -> None:
        """Remove the hooks until the next ``attach``: all of them with ``all_hooks``, else those of the
        modules that have no other forward hook. A module that has one keeps the probe's (inactive) in
        its place, so that re-attaching can never change which of the two runs first."""
        if self._root_handle is None and not all_hooks:  # detached already (called every idle step)
            return
        if self._root_handle is not None:
            self._root_handle.remove()
            self._root_handle = None
        modules = dict(self._modules)
        for name in list(self._handles):
            module = modules.get(name, lambda: None)()
            if all_hooks or module is None or len(module._forward_hooks) <= 1:
                self._handles.pop(name).remove()

    def unhook(self, names: Sequence[str]) -> None:
        """Stop hooking these modules (containers whose outputs their children produce)."""
        dropped = set(names)
        self._modules = [(name, ref) for name, ref in self._modules if name not in dropped]
        for name in dropped & set(self._handles):
            self._handles.pop(name).remove()

    def remove(self) -> None:
        self.detach(all_hooks=True)
        self._modules.clear()
        self.active = False
