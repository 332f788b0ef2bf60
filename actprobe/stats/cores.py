"""The bases of the classes whose state the C hooks and the C end of a step read: ``Arena``, ``PartialRing``,
``RowStage``, ``Recorder`` and ``Probe``.

With the C extension they are its types (``_cstate.c``), which keep a handful of each class's attributes as C
fields: Python reads and sets them as any attribute, C with no dictionary lookup. Without it they are empty
classes, and the attributes live in each instance's dictionary as usual; ``RecorderCore.seal`` then declines every
step (without the extension there are no lanes, and no step it could end), and ``ProbeCore.step`` is
``Probe._step_general``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

try:
    from ._cstats import ArenaCore, ProbeCore, RecorderCore, RingCore, StageCore
except ImportError:  # built without a C compiler (or an older build)

    class ArenaCore:  # type: ignore[no-redef]
        """Without the C extension: no fields of its own."""

    class RingCore:  # type: ignore[no-redef]
        """Without the C extension: no fields of its own."""

    class StageCore:  # type: ignore[no-redef]
        """Without the C extension: no fields of its own."""

    class RecorderCore:  # type: ignore[no-redef]
        """Without the C extension: no fields of its own, and no step ended in C."""

        def seal(self, step: int, elapsed: float, scalars: Mapping[str, object]) -> int:
            return 0

    class ProbeCore:  # type: ignore[no-redef]
        """Without the C extension: no fields of its own, and every step in Python."""

        def step(self, /, **scalars: float | int | torch.Tensor) -> None:
            """End one training step; keyword values (numbers or 1-element tensors) are recorded too.

            Device tensors are copied on their device: recording them does not synchronise."""
            self._step_general(**scalars)  # type: ignore[attr-defined]

__all__ = ["ArenaCore", "ProbeCore", "RecorderCore", "RingCore", "StageCore"]
