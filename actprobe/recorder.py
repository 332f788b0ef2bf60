"""The recorder: turns module calls into per-site partial moments and each step into one row.

The set of sites grows during the first step that records anything and is fixed from then on;
a site missing from a later step gets a row of NaN, and new sites are ignored (and reported).
"""

from __future__ import annotations

import torch
from torch import nn

from .kernels import MomentKernel, Partial
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
        partial = self.kernel(tensor.detach(), self.sites[index].unit_dim)
        if partial.packed.device != self.device:
            partial = self._on_device(partial)
        self._partials.append((index, partial))

    def _add_site(self, name: str, module: nn.Module, tensor: torch.Tensor) -> int:
        dim = unit_dim(module, tensor.shape, self._channel_first_shapes)
        self.sites.append(Site(name=name, module_type=type(module).__name__, unit_dim=dim))
        self._index[name] = len(self.sites) - 1
        if self.device is None:
            self.device = tensor.device
        return len(self.sites) - 1

    def _on_device(self, partial: Partial) -> Partial:
        """Move a partial from another device (model parallelism) to the recorder's device."""
        return Partial(partial.packed.to(self.device, non_blocking=True), partial.entries, partial.entry_unit,
                       partial.units, partial.groups, partial.numel)

    @property
    def has_partials(self) -> bool:
        return bool(self._partials)

    def fix_sites(self) -> None:
        """Freeze the site set: later, unknown sites are ignored."""
        self.fixed = True

    def finish_step(self, stage: RowStage, row: int) -> None:
        """Merge this step's partials into ``stage`` row ``row``, now or (batched) at ``drain``."""
        partials, self._partials = self._partials, []
        key = arrangement(partials)
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= 64:
                self._layouts.clear()
            layout = self._layouts[key] = Layout.build(partials, len(self.sites), stage.device)
        ring = self._ring
        if ring is not None and (ring.key != key or ring.full or ring.first_row + ring.filled != row):
            self.drain(stage)
            ring = None
        if ring is None:
            capacity = PartialRing.capacity_for(layout, stage.capacity - row)
            if capacity < 2:
                stage.set_stats(row, merge_now(layout, partials, self.dead_eps))
                return
            ring = self._ring = PartialRing(key, layout, capacity, stage.device)
            ring.first_row = row
        ring.add(partials)

    def drain(self, stage: RowStage) -> None:
        """Merge the rows waiting in the ring into ``stage``."""
        ring = self._ring
        if ring is not None and ring.filled:
            stage.set_stats(ring.first_row, ring.merge(self.dead_eps))
        self._ring = None

    def discard_step(self) -> None:
        self._partials = []
