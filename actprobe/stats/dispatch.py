"""Which backend computes the moments of each activation, and the plans that say how.

Backends, one class each, all producing the same ``Partial`` (``arena.py``):

- ``CBackend`` (``c_backend.py``): CPU tensors, when the C extension was built;
- ``TritonBackend`` (``triton_backend.py``): CUDA tensors, when Triton is installed;
- ``TorchBackend`` (``torch_backend.py``): everything else, on any device, without synchronising.

Shifting by one of the entry's own values keeps the squares from cancelling when the mean is far
from zero (the shifted-data algorithm): a tensor whose mean is 10,000 times its std keeps a relative
error near 1e-7. When the shift itself is far from the mean (a unit whose first value is an outlier),
the C backend sums that unit again around its mean, and the torch backend shifts by the mean and sums in
float64; the Triton kernel sums in float64 throughout. Half-precision inputs are summed in float32,
float64 in float64.

The environment variable ACTPROBE_KERNEL=torch forces the torch backend everywhere (for comparisons
and benchmarks); ACTPROBE_KERNEL=triton the Triton backend everywhere (on the CPU with
TRITON_INTERPRET=1: for tests).
"""

from __future__ import annotations

import os

import torch

from . import c_backend
from .arena import Arena, Partial
from .c_backend import CBackend, Lane
from .plan import Plan, make_plan
from .torch_backend import TorchBackend
from .triton_backend import TritonBackend

KERNEL_CHOICE = os.environ.get("ACTPROBE_KERNEL", "auto")
C_WANTED = KERNEL_CHOICE not in ("torch", "triton")
TRITON_WANTED = KERNEL_CHOICE != "torch"
TRITON_EVERYWHERE = KERNEL_CHOICE == "triton"


class MomentKernel:
    """Computes ``Partial``s, choosing a backend per plan.

    Args:
        near_zero_eps: the near-zero threshold.
        use_c: use the C backend for CPU tensors when it is available; the default is on unless the
            environment variable ACTPROBE_KERNEL is ``torch`` or ``triton``.
        use_triton: None (default): the Triton backend for CUDA tensors when Triton is installed,
            unless ACTPROBE_KERNEL is ``torch``; True: for every tensor (CPU tensors need Triton's
            interpreter, ``TRITON_INTERPRET=1``: for tests); False: never.
        cpu_shortcut: the torch backend's unmasked first try on the CPU.
    """

    def __init__(self, near_zero_eps: float, *, use_c: bool = C_WANTED, cpu_shortcut: bool = True,
                 use_triton: bool | None = True if TRITON_EVERYWHERE else None) -> None:
        self.near_zero_eps = near_zero_eps
        self.use_c = use_c and c_backend.available()
        self.use_triton = use_triton
        self._c = CBackend()
        self._torch = TorchBackend(cpu_shortcut=cpu_shortcut)
        self._triton = TritonBackend()
        self._plans: dict[tuple, Plan] = {}
        self.backends_used: set[str] = set()  # names of the backends that served a tensor so far

    def __call__(self, x: torch.Tensor, unit_dim: int | None, arena: Arena) -> Partial:
        """Write the moments of ``x`` into ``arena``; return where they are. ``x`` need not be detached:
        each backend reads it without recording anything for autograd."""
        if type(x) is not torch.Tensor and type(x) is not torch.nn.Parameter:
            # a tensor subclass (a DTensor, a quantised tensor) may hold no memory of its own to read
            raise TypeError(f"actprobe reads plain tensors; this one is a {type(x).__name__}")
        # the strides too: a plan says how to read the memory (a channels-last output and a stride-0 gradient
        # of the same shape are read differently)
        key = (x.shape, x.stride(), x.dtype, x.device, unit_dim)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(x, unit_dim)
        return plan.backend(x, plan, arena)

    def lane(self, x: torch.Tensor, unit_dim: int | None) -> Lane | None:
        """The C kernel's call for tensors like ``x`` (its shape, strides, dtype and device), when the C
        backend serves them and reads them in place; None otherwise. Same results as ``__call__``."""
        plan = self._plans.get((x.shape, x.stride(), x.dtype, x.device, unit_dim))
        return plan.backend.lane(x, plan) if plan is not None and plan.backend is self._c else None

    def _plan(self, x: torch.Tensor, unit_dim: int | None) -> Plan:
        plan = make_plan(x, unit_dim, self.near_zero_eps)
        wanted = self.use_triton if self.use_triton is not None else (TRITON_WANTED and x.device.type == "cuda")
        if wanted and self._triton.prepare(x, plan):
            plan.backend = self._triton
        elif self.use_c and x.device.type == "cpu":
            plan.backend = self._c
        else:
            plan.backend = self._torch
        self.backends_used.add(plan.backend.name)
        return plan

    def release_memory(self) -> None:
        """Drop cached scratch memory and plans."""
        self._c.release_memory()
        self._plans.clear()

