"""The recorder: turns module calls into per-site partial moments and each step into one row.

The set of sites grows during the first step that records anything and is fixed from then on;
a site missing from a later step gets a row of NaN, and new sites are ignored (and reported).
"""

from __future__ import annotations

import torch
from torch import nn

from .kernels import Arena, MomentKernel, Partial
from .reduce import Layout, PartialRing, arrangement, merge_now
from .sites import Site, floating_outputs, site_name, unit_dim
from .staging import RowStage


class Recorder:
    """Collects the partials of the current step; ``finish_step`` reduces them to a row."""

    def __init__(self, *, near_zero_eps: float, dead_eps: float) -> None:
        self.kernel = MomentKernel(near_zero_eps)
        self.dead_eps = dead_eps
        self.sites: list[Site] = []
        self._index: dict[str, int] = {}
        self.fixed = False
        self.device: torch.device | None = None
        self.ignored: set[str] = set()
        self._partials: list[tuple[int, Partial]] = []
        self._channel_first_shapes: set[torch.Size] = set()
        self._layouts: dict[tuple, Layout] = {}
        self._ring: PartialRing | None = None
        self._arena: Arena | None = None

    def observe(self, module_name: str, call_index: int, module: nn.Module, output: object) -> None:
        if type(output) is torch.Tensor and output.is_floating_point():  # the common case, kept short
            self._observe_one(site_name(module_name, call_index, ""), module, output)
            return
        for suffix, tensor in floating_outputs(output):
            self._observe_one(site_name(module_name, call_index, suffix), module, tensor)

    def _observe_one(self, name: str, module: nn.Module, tensor: torch.Tensor) -> None:
        index = self._index.get(name)
        if index is None:
            if self.fixed:
                self.ignored.add(name)
                return
            index = self._add_site(name, module, tensor)
        if tensor.numel() == 0:
            return
        if self._arena is None:
            self._arena = Arena(self.device)
        self._partials.append((index, self.kernel(tensor.detach(), self.sites[index].unit_dim, self._arena)))

    def _add_site(self, name: str, module: nn.Module, tensor: torch.Tensor) -> int:
        dim = unit_dim(module, tensor.shape, self._channel_first_shapes)
        self.sites.append(Site(name=name, module_type=type(module).__name__, unit_dim=dim))
        self._index[name] = len(self.sites) - 1
        if self.device is None:
            self.device = tensor.device
        return len(self.sites) - 1

    @property
    def has_partials(self) -> bool:
        return bool(self._partials)

    def fix_sites(self) -> None:
        """Freeze the site set: later, unknown sites are ignored."""
        self.fixed = True

    def finish_step(self, stage: RowStage, index: int) -> None:
        """Merge this step's partials into ``stage`` row ``index``, now or (batched) at ``drain``."""
        partials, self._partials = self._partials, []
        assert self._arena is not None
        row = self._arena.row()
        key = arrangement(partials)
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= 64:
                self._layouts.clear()
            layout = self._layouts[key] = Layout.build(partials, len(self.sites), stage.device)
        ring = self._ring
        if ring is not None and ring.filled and (
                ring.key != key or ring.full or ring.first_row + ring.filled != index):
            self.drain(stage)
        if ring is None or ring.key != key:
            capacity = PartialRing.capacity_for(layout, stage.capacity)
            if capacity < 2:  # too wide to batch: merge this step on its own
                stage.set_stats(index, merge_now(layout, row, self.dead_eps))
                self._arena.clear()
                return
            ring = self._ring = PartialRing(key, layout, capacity, stage.device)
        if not ring.filled:
            ring.first_row = index
        ring.add(row)
        self._arena.clear()

    def drain(self, stage: RowStage) -> None:
        """Merge the rows waiting in the ring into ``stage``."""
        ring = self._ring
        if ring is not None and ring.filled:
            stage.set_stats(ring.first_row, ring.merge(self.dead_eps))

    def discard_step(self) -> None:
        self._partials = []
        if self._arena is not None:
            self._arena.clear()
