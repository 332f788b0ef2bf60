"""The CPU backend: the C extension ``actprobe.stats._cstats`` (``_cstats.c``).

It reads each value once (vector instructions, blocks of at most 256 values summed in float32 and
the blocks in float64); a second, masked pass runs only when the tensor holds NaN or ±Inf. It reads
the tensor's memory in place when it is laid out as (A, E, B), else a converted copy in a scratch
buffer that is reused from step to step. A large tensor is read in parts by torch's own OpenMP
team (``share_torch_threads``): a training step that uses every core pays the hook its share, not
twice it.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Callable
from typing import NamedTuple

import torch

from .arena import Arena, Partial
from .plan import Plan

try:
    from . import _cstats
except ImportError:  # built without a C compiler: the torch backend serves the CPU too
    _cstats = None
else:
    _cstats.set_lane_types(torch.Tensor, Partial)
    _cstats.set_grad_enabled_function(torch.is_grad_enabled)

NAME = "C"
SCRATCH_KEEP_BYTES = 16 << 20  # a larger scratch copy is freed after each use, not kept until close


def available() -> bool:
    return _cstats is not None


OPENMP_LIBRARY = re.compile(r"/lib(gomp|iomp5|omp)[-.\w]*\.so[.\d]*$")
ENTRY_POINTS = ("GOMP_parallel", "omp_get_thread_num", "omp_get_max_threads")


def openmp_entry_points() -> tuple[int, int, int]:
    """Addresses of ``GOMP_parallel``, ``omp_get_thread_num`` and ``omp_get_max_threads`` in the OpenMP
    runtime this process has loaded (torch's own, for its CPU operations), or zeros: Linux only, and
    only a runtime that is loaded already (``RTLD_NOLOAD``): actprobe never brings a second one in."""
    try:
        with open("/proc/self/maps") as maps:
            paths = dict.fromkeys(line.split()[-1] for line in maps if OPENMP_LIBRARY.search(line.rstrip()))
    except OSError:
        return 0, 0, 0
    torch_folder = os.path.dirname(torch.__file__)
    for path in sorted(paths, key=lambda p: not p.startswith(torch_folder)):  # torch's own runtime first
        try:
            library = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            functions = [getattr(library, name) for name in ENTRY_POINTS]
        except (OSError, AttributeError):
            continue
        addresses = tuple(ctypes.cast(f, ctypes.c_void_p).value or 0 for f in functions)
        return addresses if all(addresses) else (0, 0, 0)  # type: ignore[return-value]
    return 0, 0, 0


def share_torch_threads() -> None:
    """Let the C kernel read large tensors with torch's own OpenMP threads: each call takes as many as
    torch's operations would then (``torch.set_num_threads``), one when torch uses one or no runtime is
    found. Process-wide, set when a probe's kernel is made; ACTPROBE_KERNEL_THREADS=1 keeps every call on
    the calling thread."""
    global _ENTRY_POINTS
    if _cstats is None:
        return
    if os.environ.get("ACTPROBE_KERNEL_THREADS", "") == "1":
        _cstats.set_team(0, 0, 0)
        return
    if _ENTRY_POINTS is None:
        _ENTRY_POINTS = openmp_entry_points()
    _cstats.set_team(*_ENTRY_POINTS)


_ENTRY_POINTS: tuple[int, int, int] | None = None


# run_lane(lane, x, arena, partials) -> bool, for a site's lane ``(site, shape, strides, dtype, *Lane, [None])``:
# when ``x`` is a plain CPU tensor of that shape, strides and dtype and ``arena`` has room, write its moments into
# ``arena`` (an ``Arena``: its fields are ``ArenaCore``'s) as ``CBackend`` would, append ``(site, Partial)`` to ``partials`` and return True; else change nothing
# and return False. The list at the end keeps the last pair: a call at the same offset appends that same object
# (a step like the last allocates nothing, and its arrangement compares equal by identity). The C function
# itself (``_cstats.lane``), no Python frame; lanes exist only with the extension.
run_lane: Callable[[tuple, torch.Tensor, Arena, list], bool] | None = None if _cstats is None else _cstats.lane

# lane_hook(name, slow, engine, owner): a forward hook for module ``name`` that runs the site's lane itself (no
# Python frame) when ``engine``'s state lets the call be recorded, it is the module's first call of the forward
# and ``owner._lanes[name]`` takes the output, and hands every other call to ``slow``, the Python hook it
# stands for. The engine provides ``active``, ``_capturing``, ``_train_only``, ``_root`` and ``_calls``
# (``engine.hooks.HookEngine``), the owner ``_lanes``, ``_arena`` and ``_partials`` as fields of its base
# ``stats.cores.RecorderCore`` (``engine.recorder.Recorder``; any other owner: every call goes to ``slow``).
lane_hook: Callable[[str, Callable[..., None], object, object], Callable[..., None]] | None = (
    None if _cstats is None else _cstats.Hook)


def set_frame_callback(getter: Callable[[], object] | None) -> None:
    """Give the hooks in C Dynamo's getter of its frame-evaluation callback (None: this torch has none): a call
    made while the callback is set goes to the Python hook, which guards itself against torch.compile."""
    if _cstats is not None:
        _cstats.set_frame_callback(getter)


class Lane(NamedTuple):
    """The C kernel's call for every tensor of one shape, strides and dtype that it reads in place: what
    a recorded site whose outputs look alike from step to step needs, worked out once (``CBackend.lane``).
    ``run_lane`` writes with it the same ``Partial(offset, entries, units, numel)`` as ``CBackend``."""

    is_double: bool
    a: int
    entries: int
    b: int
    near_bound: float
    units: int
    numel: int


class CBackend:
    """Moments of CPU tensors with the C kernel, written straight into the arena."""

    name = NAME

    def __init__(self) -> None:
        self._scratch: dict[torch.dtype, torch.Tensor] = {}
        share_torch_threads()

    def __call__(self, x: torch.Tensor, plan: Plan, arena: Arena) -> Partial:
        """The kernel reads ``x``'s memory through its pointer: no autograd, so no ``detach()`` needed."""
        a, entries, b = plan.view_shape
        width = 4 * entries + 4
        offset = arena.reserve(width)
        if arena.on_cpu and plan.contiguous and x.dtype is plan.dtype:  # the common case, kept flat
            args = (plan.is_double, x.data_ptr(), a, entries, b, plan.near_bound, arena.pointer + 8 * offset)
            if not _cstats.moments(*args):
                _cstats.masked(*args)
        elif arena.on_cpu:
            self._moments(x, plan, arena.pointer + 8 * offset)
        else:  # a CPU tensor recorded into a device arena (a model split across devices)
            packed = torch.empty(width, dtype=torch.float64)
            self._moments(x, plan, packed.data_ptr())
            arena.buffer[offset:offset + width].copy_(packed, non_blocking=True)
        return Partial(offset, entries, plan.units, x.numel())

    @staticmethod
    def lane(x: torch.Tensor, plan: Plan) -> Lane | None:
        """The call that serves ``x`` (and every tensor of its shape, strides and dtype: ``plan``'s, a plan of this
        backend, so a CPU tensor), when the kernel reads it in place; None when it needs a converted copy."""
        if not plan.contiguous or x.dtype is not plan.dtype:
            return None
        a, entries, b = plan.view_shape
        return Lane(plan.is_double, a, entries, b, plan.near_bound, plan.units, x.numel())

    def _moments(self, x: torch.Tensor, plan: Plan, out_pointer: int) -> None:
        copied = x.dtype != plan.dtype or not plan.contiguous
        if copied:
            view = plan.view(x.detach())
            x = self._scratch_for(view.numel(), plan.dtype).view(view.shape).copy_(view)
        a, e, b = plan.view_shape
        args = (plan.is_double, x.data_ptr(), a, e, b, plan.near_bound, out_pointer)
        if not _cstats.moments(*args):
            _cstats.masked(*args)
        if copied and x.numel() * x.element_size() > SCRATCH_KEEP_BYTES:
            del self._scratch[plan.dtype]  # a large copy is made again when needed, not held meanwhile

    def _scratch_for(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        buffer = self._scratch.get(dtype)
        if buffer is None or buffer.numel() < numel:
            buffer = self._scratch[dtype] = torch.empty(numel, dtype=dtype)
        return buffer[:numel]

    def release_memory(self) -> None:
        self._scratch.clear()
