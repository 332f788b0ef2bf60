"""The one training loop: ``actprobe run``, the recipes, the benchmarks and the examples drive their
steps through it, with a probe attached.

Owns: one optimisation step (``loop.TrainStep``), the loop over epochs and steps with its hooks
(``loop.run_loop``: progress, per-step and per-epoch callbacks, stopping, interruption),
evaluation on held-out batches (``loop.evaluate``) and the choice of device (``device``).

May import: torch, ``actprobe.errors``, ``actprobe._checks`` and ``actprobe.engine`` (the ``Probe``
it steps). Never h5py, analysis, rendering (rich, matplotlib) or the CLI: progress is drawn by
whatever ``Progress`` the caller passes.
"""

from .device import resolve_device
from .loop import DEFAULT_LR, LoopResult, Progress, StepOutput, TrainStep, evaluate, run_loop

__all__ = ["DEFAULT_LR", "LoopResult", "Progress", "StepOutput", "TrainStep", "evaluate", "resolve_device",
           "run_loop"]
