"""Hooks that ``torch.compile`` never traces, at no cost in eager mode.

``torch.compiler.disable(fn)`` wraps ``fn`` in a function that switches Dynamo's frame evaluation off and
on around every call: ~1.2 µs per call on this project's CPU, paid by every hooked module call of a model
that is not compiled at all (1.2 ms a step for 1000 sites). ``eager_only(fn)`` instead returns a function
that Dynamo treats as disabled when it traces a compiled forward (a graph break, as for
``torch.compiler.disable``), and that calls ``fn`` directly unless a frame-evaluation callback is active
(a compiled function's graph break runs the hook under Dynamo's callback: then it goes through
``torch.compiler.disable(fn)``, so that Dynamo never compiles the frames ``fn`` calls). Where this
version of torch lacks the private functions it needs, it is ``torch.compiler.disable(fn)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

try:
    from torch._C._dynamo.eval_frame import get_eval_frame_callback
    from torch._dynamo.eval_frame import skip_code
except ImportError:  # another torch: the plain wrapper
    get_eval_frame_callback = skip_code = None


def dynamo_compiled() -> bool:
    """Whether ``torch.compile`` has compiled a frame in this process so far (Dynamo's own counter)."""
    utils = sys.modules.get("torch._dynamo.utils")
    counters = getattr(utils, "counters", None)
    try:
        return bool(counters and counters["frames"]["total"])
    except (KeyError, TypeError):
        return True  # another torch: assume it has, and keep the hooks (correct, a little slower)


class InertHook:
    """What a probe's hook becomes in a model pickled while the probe records (``torch.save(model)``, ``pickle``):
    a hook that does nothing. The saved model loads and runs as it would without the probe, and records nothing
    (it keeps the entry in its hook dictionary, so its modules take PyTorch's hook path: save ``state_dict()``, or
    close the probe first, for a model without it)."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __repr__(self) -> str:
        return "InertHook()"


class ProbeHook:
    """A probe's hook as PyTorch's hook dictionaries hold it: it calls ``fn`` (which guards itself against
    ``torch.compile``, as ``eager_only`` and ``eager_hook`` make it). A pickled model keeps an ``InertHook`` in its
    place (a function made inside the probe cannot be pickled: ``torch.save(model)`` failed with it); a copy of the
    model (``copy.deepcopy``) keeps the same hook, as PyTorch's copies keep any function hook."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return InertHook, ()

    def __copy__(self) -> ProbeHook:
        return self

    def __deepcopy__(self, memo: dict) -> ProbeHook:
        return self


ProbeHook._torchdynamo_disable = True  # type: ignore[attr-defined]  # tracing breaks the graph at the hook …
ProbeHook.__call__._torchdynamo_disable = True  # type: ignore[attr-defined]
if skip_code is not None:
    skip_code(ProbeHook.__call__.__code__)  # … and Dynamo's callback leaves its frame alone


def eager_hook(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``eager_only`` for a function that guards itself, saving the wrapper's frame: one whose first statement
    is ``if not inside and frame_callback is not None and frame_callback() is not None: return guarded(...)``,
    with ``guarded`` = ``torch.compiler.disable`` of a call of ``fn`` with ``inside=True`` (inside it the
    callback is None, or False under some of torch.compiler's stances: the flag, not the callback, ends the
    recursion). Returns ``fn`` itself, marked as ``eager_only`` marks its wrapper; where this torch lacks the
    private functions, ``frame_callback`` is None and this returns ``torch.compiler.disable(fn)``."""
    if frame_callback is None or skip_code is None:
        return torch.compiler.disable(fn)
    skip_code(fn.__code__)
    fn._torchdynamo_disable = True  # type: ignore[attr-defined]
    return fn


frame_callback = get_eval_frame_callback  # Dynamo's frame-evaluation callback (None outside torch.compile)


def eager_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    guarded = torch.compiler.disable(fn)
    if get_eval_frame_callback is None or skip_code is None:
        return guarded

    def call(*args: Any) -> Any:
        if get_eval_frame_callback() is not None:  # under torch.compile's frame evaluation
            return guarded(*args)
        return fn(*args)

    skip_code(call.__code__)  # the callback leaves this frame alone (it runs eagerly) …
    call._torchdynamo_disable = True  # type: ignore[attr-defined]  # … and tracing breaks the graph here
    return call
