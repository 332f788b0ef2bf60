"""The hook engine: forward hooks on the selected modules, numbered per forward.

Hooks return ``None`` and only read detached outputs, so the model computes exactly what it would
without them. The hooks keep the engine (and so the probe) alive while they are attached, as
PyTorch hooks keep their closures; the engine holds the model only through a weak reference, and
removing the handles leaves nothing behind.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..stats import c_backend
from . import eager
from .dispatch import DISPATCH, _Dispatch
from .eager import ProbeHook, dynamo_compiled, eager_hook, eager_only

c_backend.set_frame_callback(eager.frame_callback)  # the hooks in C leave calls under torch.compile to the Python hook

# on_call(module_name, call_index, module, inputs, output); inputs = (args, kwargs) of the call
OnCall = Callable[[str, int, nn.Module, object, object], None]
# a registered hook: (its module's hook dictionary, the id PyTorch gave it, the hook)
Slot = tuple[dict, int, Callable[..., None]]
OnError = Callable[[Exception], None]


class HookEngine:
    """Attaches one forward hook per selected module and a pre-hook on the root.

    A module's calls are numbered from 0 within each forward of the root (and within each step,
    for models whose submodules are called directly). With ``train_only``, calls made while the
    root is in eval mode or while gradients are disabled are skipped. An exception raised by
    ``on_call`` goes to ``on_error``, never into the model's forward.
    """

    def __init__(self, model: nn.Module, modules: Sequence[tuple[str, nn.Module]], on_call: OnCall,
                 on_error: OnError, *, train_only: bool, lane_owner: object = None) -> None:
        """``lane_owner``: whose sites' lanes the hooks run themselves, in C (``c_backend.lane_hook``), for
        calls that ``on_call`` would hand to the same lane (the recorder); None: every call goes to ``on_call``.
        With a lane owner and the C extension, the modules' calls are recorded through the swapped
        ``nn.Module._call_impl`` where they can be (engine/dispatch.py), in place from the first ``attach`` until
        the engine is removed (or a compile moves them to hooks); while detached, it calls them plainly."""
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
        self._pre_hook = ProbeHook(eager_only(self._new_forward))
        self._lane_owner = lane_owner
        self._hooks = {name: self._hook_for(name) for name, _ in modules}
        self._root_handle: RemovableHandle | None = None
        self._handles: dict[str, RemovableHandle] = {}  # registered once, then taken out and put back
        # each registered hook as (its module's hook dictionary, its id, the hook): the root's pre-hook, the
        # modules' forward hooks by name, and those taken out now
        self._root_slot: Slot | None = None
        self._slots: dict[str, Slot] = {}
        self._out: list[Slot] = []
        self._attached = False
        # modules whose calls are recorded through the swapped Module._call_impl while attached (engine/dispatch.py):
        # they never hold the probe's hook, unless torch.compile moves them to hooks for good (``use_hooks``)
        self._direct: dict[str, weakref.ref] = {}
        # whether this engine holds the swapped _call_impl in place now (a list: an engine collected without being
        # removed, its model gone, gives its hold back through the finalizer, which must not hold the engine)
        self._holding = [False]
        # the swap this engine registered with, kept: whatever the module's DISPATCH says later (a test sets it to None)
        self._dispatch = DISPATCH
        if (self._dispatch is not None and lane_owner is not None and c_backend.lane_hook is not None
                and not dynamo_compiled()):
            for name, module in modules:
                if module is not model and self._dispatch.register(module, self._hooks[name],
                                                                   partial(self._demote, name)):
                    self._direct[name] = weakref.ref(module)
            if self._direct:
                self._dispatch.users.add(self)
                weakref.finalize(self, _give_back, self._holding, self._dispatch)
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
        def hook(module: nn.Module, args: object, kwargs: object, output: object, inside: bool = False) -> None:
            if not inside and eager.frame_callback is not None and eager.frame_callback() is not None:
                # under Dynamo's frame evaluation (see eager_hook): through torch.compiler.disable, which
                # calls back here with inside=True (inside it the callback may be False rather than None)
                return guarded(module, args, kwargs, output)
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
        guarded = torch.compiler.disable(lambda module, args, kwargs, output: hook(module, args, kwargs, output, True))
        if self._lane_owner is None or c_backend.lane_hook is None:
            return ProbeHook(eager_hook(hook))
        # the common case of a recorded step in C: the checks above, the call count and the site's lane, one
        # call with no Python frame (every other call goes to this hook)
        return c_backend.lane_hook(name, eager_hook(hook), self, self._lane_owner)

    def new_step(self) -> None:
        self._calls.clear()

    @property
    def call_counts(self) -> dict[str, int]:
        """Calls of each hooked module in the current forward (names of first calls only once each); cleared by
        ``new_step``, and by whoever ends a step without calling it (``Probe.step`` in C clears it itself)."""
        return self._calls

    @property
    def attached(self) -> bool:
        return self._attached

    def attach(self) -> None:
        """Put the hooks back (registering them the first time). Steps that are not recorded run without
        them (``detach``): a module with no hooks takes PyTorch's fast call path, so they cost nothing."""
        model = self._model()
        if model is None or self._attached:  # attached already (called every recorded step)
            return
        self._attached = True
        if self._direct and not self._holding[0]:  # held from the first recorded step until the probe closes
            if dynamo_compiled() or not self._dispatch.hold():
                self.use_hooks()  # (which puts back and registers the hooks, as below)
            else:
                self._holding[0] = True
        self._put_back()
        self._register_missing(model)

    def _put_back(self) -> None:
        """Put the hooks taken out back into their dictionaries, under their ids."""
        for hooks, hook_id, hook in self._out:
            hooks[hook_id] = hook
            if len(hooks) > 1 and isinstance(hooks, OrderedDict):  # a hook the user added while it was out:
                hooks.move_to_end(hook_id, last=False)  # the probe's runs first, as it did (it was the only one)
        self._out.clear()

    def _register_missing(self, model: nn.Module, first: frozenset[str] = frozenset()) -> None:
        """Register the hooks that are not in their module's dictionary (the modules recorded directly aside);
        those of the modules named in ``first`` before the module's other hooks."""
        # register the hooks that are not in their module's dictionary: the first time, and after the user
        # cleared or replaced a dictionary (``module._forward_hooks.clear()``); PyTorch keeps no other record
        if not _holds(model._forward_pre_hooks, self._root_slot):
            if self._root_handle is not None:
                self._root_handle.remove()
            self._root_handle = model.register_forward_pre_hook(self._pre_hook)
            self._root_slot = (model._forward_pre_hooks, self._root_handle.id, self._pre_hook)
        slots, direct = self._slots, self._direct
        for name, ref in self._modules:
            if name in direct:
                continue
            module = ref()
            if module is None or _holds(module._forward_hooks, slots.get(name)):
                continue
            self._register(name, module, first=name in first)

    def _register(self, name: str, module: nn.Module, *, first: bool) -> None:
        """Register module ``name``'s hook (``first``: before the module's other hooks)."""
        if name in self._handles:
            self._handles.pop(name).remove()  # from a dictionary the module no longer uses, if it is there
        handle = self._handles[name] = module.register_forward_hook(self._hooks[name], with_kwargs=True, prepend=first)
        self._slots[name] = (module._forward_hooks, handle.id, self._hooks[name])

    def detach(self) -> None:
        """Take the hooks out until the next ``attach``: those of the modules that have no other forward
        hook (a module that has one keeps the probe's, inactive, in its place, so that putting it back can
        never change which of the two runs first). ``remove`` removes every hook for good.

        A hook is taken out of its module's hook dictionary and put back under the id PyTorch gave it
        (``RemovableHandle.id``): ~0.1 µs a module, against ~5 µs to remove and register it again."""
        if not self._attached:  # detached already (called every idle step)
            return
        if dynamo_compiled():
            # once torch.compile has compiled anything, the hooks stay, inactive: a function that calls the model
            # is compiled without guards on its modules' hooks, and a graph made on a step without them would
            # run without them on the recorded steps too; the modules recorded directly move to hooks
            if self._direct:
                self.use_hooks()
            return
        self._attached = False  # the modules recorded directly: the swapped _call_impl reads it, and calls them plainly
        out = self._out
        root = self._root_slot
        if root is not None and root[1] in root[0]:  # the root's pre-hook goes in any case
            del root[0][root[1]]
            out.append(root)
        for slot in self._slots.values():
            hooks, hook_id, _ = slot
            if len(hooks) == 1 and hook_id in hooks:  # the probe's hook is the module's only one
                del hooks[hook_id]
                out.append(slot)

    def _undirect(self, name: str) -> bool:
        """Stop recording module ``name`` directly (unregister it); False if it was not."""
        ref = self._direct.pop(name, None)
        module = None if ref is None else ref()
        if module is not None:
            self._dispatch.unregister(module, self._hooks[name])
        return ref is not None

    def leave_dispatch(self) -> None:
        """Release the swap, and unregister the modules recorded directly (they hold no hook yet): PyTorch's
        ``Module._call_impl`` is back once no other probe holds it. For an engine that records no more (closed, or
        its probe failed) and before ``use_hooks``."""
        _give_back(self._holding, self._dispatch)
        for name in list(self._direct):
            self._undirect(name)

    def use_hooks(self) -> None:
        """Record the modules recorded directly with their hooks from now on: registered now, and every hook put back,
        attached or not (on an idle step, inactive). torch.compile calls this as it begins
        (``dispatch.DISPATCH.compile_starts``): it must make its code with the hooks it will always have (a function
        compiled without them is not guarded on them). A module recorded directly gets the probe's hook before any of
        the user's, as it would from a recorded call (``_demote``)."""
        direct = frozenset(self._direct)
        self.leave_dispatch()
        model = self._model()
        if model is not None:
            self._put_back()
            self._attached = True
            self._register_missing(model, first=direct)

    def _demote(self, name: str, module: nn.Module) -> None:
        """A module recorded directly has hooks of its own now (the user's, registered while the probe records):
        it gets the probe's hook back, first, so that the probe sees what its hook always sees, the output before
        the user's hooks change it (the swapped ``_call_impl`` calls this in the middle of the module's call)."""
        if self._undirect(name):
            self._register(name, module, first=True)

    def unhook(self, names: Sequence[str]) -> None:
        """Stop hooking these modules (containers whose outputs their children produce)."""
        dropped = set(names)
        for name in dropped & set(self._direct):
            self._undirect(name)
        self._modules = [(name, ref) for name, ref in self._modules if name not in dropped]
        for name in dropped & set(self._handles):
            slot = self._slots.pop(name)
            self._out = [other for other in self._out if other is not slot]
            self._handles.pop(name).remove()

    def retire(self) -> None:
        """This engine records no more (its probe failed or closes): PyTorch's ``Module._call_impl`` back (once no
        other probe holds the swap), its modules unregistered, and a later torch.compile leaves its model alone."""
        if self._dispatch is not None:
            self._dispatch.users.discard(self)
        self.leave_dispatch()

    def remove(self) -> None:
        """Remove every hook for good, and retire."""
        self.retire()
        for handle in (self._root_handle, *self._handles.values()):
            if handle is not None:
                handle.remove()
        self._root_handle = self._root_slot = None
        self._handles.clear()
        self._slots.clear()
        self._out.clear()
        self._attached = False
        self._modules.clear()
        self.active = False


def _give_back(holding: list[bool], swap: _Dispatch | None) -> None:
    """Release an engine's hold on the swapped ``_call_impl``, if it has one."""
    if holding[0] and swap is not None:
        holding[0] = False
        swap.release()


def _holds(hooks: dict, slot: Slot | None) -> bool:
    """Whether ``hooks`` (a module's hook dictionary now) is the one ``slot``'s hook was registered in, and
    still holds it (taking a hook out leaves its other entries, such as ``with_kwargs``, in place)."""
    return slot is not None and hooks is slot[0] and slot[1] in hooks
