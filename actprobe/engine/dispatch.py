"""Recorded module calls without PyTorch's hook path: ``nn.Module._call_impl`` swapped while a probe is open.

A module with a forward hook takes PyTorch's hook path on every call (``Module._call_impl``'s Python code
around the hooks): ~1.3 µs a call on this project's CPU, most of what a recorded step of a model of many
small layers costs. From a probe's first recorded step until it closes, ``nn.Module._call_impl`` (the function
that ``module(x)`` reaches through ``Module._wrapped_call_impl``) is a method in C (``_cstats.make_call_impl``): for
a module registered here it calls ``module.forward`` and then, on a recorded step (its engine attached), the
probe's hook itself, when nothing else wants the hook path (no hook of the module's own or global ones, no
``torch.jit`` trace, no ``torch.compile`` frame evaluation); on other steps it calls ``module.forward`` alone, as
PyTorch's function does for a module without hooks. Every other call goes to PyTorch's function. The class
attribute is set twice a probe, not at every recorded step: each change makes Python re-specialise the code
that touches modules, and CPython 3.13 allows a class a limited number of changes (``CHANGE_LIMIT``). The modules
themselves are never changed (a model saved, pickled or copied while a probe records holds nothing of it, and a
copy's calls are not recorded).

A module is recorded this way when the probe starts and its own hook dictionaries are empty, its class reaches
PyTorch's ``__call__`` and ``_call_impl`` (no override), and no other probe registered it; every other one keeps
the probe's forward hook, as before. A hook the user adds to a registered module later gives it the probe's hook
back, first, at its next recorded call (it sees the module's output before the user's hook changes it, as its
hook does). Once ``torch.compile`` begins compiling anything in the process (Dynamo's compile-start callback, or a
call of a compiled module while the swap is in place), every probe moves its modules to hooks for good, before
Dynamo traces: compiled code is made with the hooks it will always have, as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules import module as _module

from ..stats import c_backend

ORIGINAL_CALL = nn.Module.__dict__["__call__"]
ORIGINAL_CALL_IMPL = nn.Module.__dict__["_call_impl"]
# Setting a class attribute changes the class and every subclass (PyType_Modified): each takes a new version tag
# when next looked up, and CPython 3.13 gives a class at most 1,000 (MAX_VERSIONS_PER_CLASS) before it stops
# specialising attribute lookups and calls on its instances for the rest of the process (measured, 3.13.0: a forward
# of 100 small modules 443 -> 505 µs after 1,200 changes). The swap is held from a probe's first recorded step
# until it closes, two changes a probe; after this many in a process, later probes record through hooks.
CHANGE_LIMIT = 200
_GLOBAL_HOOKS = tuple(getattr(_module, name) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))


class _Dispatch:
    """The process's one swapped ``_call_impl``: the registry of modules, and how many probes hold it in place."""

    def __init__(self, make_call_impl: Callable[..., object], compiled_type: type) -> None:
        self.registry: dict[int, tuple[weakref.ref, object, Callable[[nn.Module], None]]] = {}
        self.call_impl = make_call_impl(nn.Module, ORIGINAL_CALL_IMPL, self.registry, _GLOBAL_HOOKS,
                                        torch._C._get_tracing_state, compiled_type, self.compile_starts)
        self.holders = 0
        self.changes = 0  # how many times nn.Module._call_impl was set here (``CHANGE_LIMIT``)
        self.compiling = False  # torch.compile has begun compiling in this process: no module is registered again
        self.users: weakref.WeakSet = weakref.WeakSet()  # engines with registered modules (``use_hooks()``)

    def compile_starts(self, *unused: object) -> None:
        """Dynamo begins compiling a frame (its start callback): every engine moves its registered modules to hooks
        before tracing begins, so that the graph is made with the hooks it will always have from now on (a
        compiled function is not guarded on the modules' hooks) and this very step is recorded through them."""
        self.compiling = True
        for engine in list(self.users):
            engine.use_hooks()

    def register(self, module: nn.Module, hook: object, demote: Callable[[nn.Module], None]) -> bool:
        """Record ``module``'s calls with ``hook`` (a ``_cstats.Hook``) while the swap is in place; False when it
        cannot be (another probe registered it, its class overrides the call path, or it has hooks now).
        ``demote(module)`` is called, in the middle of a call, when the module has hooks of its own then: it must
        give the module the probe's hook, first (``prepend=True``), and unregister it."""
        registry, key = self.registry, id(module)
        entry = registry.get(key)
        if self.compiling or (entry is not None and entry[0]() is not None):
            return False
        cls = type(module)
        if (getattr(cls, "__call__", None) is not ORIGINAL_CALL
                or getattr(cls, "_call_impl", None) not in (ORIGINAL_CALL_IMPL, self.call_impl)
                or module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks):
            return False

        def forget(ref: weakref.ref) -> None:  # the module is gone: its entry goes (unless the address has a new one)
            if registry.get(key, (None,))[0] is ref:
                del registry[key]

        registry[key] = (weakref.ref(module, forget), hook, demote)
        return True

    def unregister(self, module: nn.Module, hook: object) -> None:
        key = id(module)
        entry = self.registry.get(key)
        if entry is not None and entry[1] is hook:
            del self.registry[key]

    def hold(self) -> bool:
        """Put the swapped function in place (once for every holder); False, and nothing changed, when
        ``nn.Module._call_impl`` is neither PyTorch's nor ours (another library replaced it)."""
        current = nn.Module.__dict__.get("_call_impl")
        if self.compiling:
            return False
        if self.compile_starts not in _start_callbacks():  # (torch._dynamo.reset() clears them)
            _on_compile_start(self.compile_starts)
        if current is not self.call_impl:
            if current is not ORIGINAL_CALL_IMPL or self.changes >= CHANGE_LIMIT:
                return False
            nn.Module._call_impl = self.call_impl
            self.changes += 1
        self.holders += 1
        return True

    def release(self) -> None:
        """One holder less: PyTorch's function back when none is left (unless another library replaced ours)."""
        self.holders = max(0, self.holders - 1)
        if self.holders == 0 and nn.Module.__dict__.get("_call_impl") is self.call_impl:
            nn.Module._call_impl = ORIGINAL_CALL_IMPL
            self.changes += 1


def _start_callbacks() -> list:
    from torch._dynamo.callback import callback_handler

    return callback_handler.start_callbacks


def _on_compile_start(callback: Callable[..., None]) -> None:
    from torch._dynamo.callback import on_compile_start

    on_compile_start(callback)


def _told_to_dynamo(dispatch: _Dispatch) -> bool:
    """Make torch.compile safe with the swap: ``compile_starts`` runs when Dynamo begins compiling (the swap is
    gone before it traces), and, should it trace our ``_call_impl`` all the same, it traces PyTorch's own in its
    place (a C function it cannot trace would break the graph at the model's call and run the whole model
    eagerly, for good). False where this torch lacks either means: then no module is recorded directly."""
    try:
        from torch._dynamo.callback import callback_handler, on_compile_start
        from torch._dynamo.decorators import substitute_in_graph
    except ImportError:
        return False
    if not isinstance(getattr(callback_handler, "start_callbacks", None), list):
        return False

    def _call_impl(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 — PyTorch's signature
        return ORIGINAL_CALL_IMPL(self, *args, **kwargs)

    try:
        substitute_in_graph(dispatch.call_impl, skip_signature_check=True)(_call_impl)
        on_compile_start(dispatch.compile_starts)
        _keep_through_reset(callback_handler, dispatch.compile_starts)
    except (TypeError, ValueError, AttributeError, ImportError):
        return False
    return True


def _keep_through_reset(handler: object, callback: Callable[..., None]) -> None:
    """``torch._dynamo.reset()`` clears the compile-start callbacks (``handler.clear()``): a probe that holds the swap
    from its first step to its last (recording every step) would then meet a compile unwarned, and the modules it
    records directly would be compiled without its hooks. The handler's ``clear`` gets ours back after clearing."""
    clear = handler.clear

    def clear_keeping_ours() -> None:
        clear()
        handler.register_start_callback(callback)

    handler.clear = clear_keeping_ours


def _dispatch() -> _Dispatch | None:
    cstats = c_backend._cstats
    if cstats is None or not hasattr(cstats, "make_call_impl"):
        return None
    try:
        from torch._dynamo.eval_frame import OptimizedModule  # (imported by engine/eager.py already)
    except ImportError:
        return None
    made = _Dispatch(cstats.make_call_impl, OptimizedModule)
    return made if _told_to_dynamo(made) else None


DISPATCH = _dispatch()
