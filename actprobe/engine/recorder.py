"""The recorder: turns module calls into per-site partial moments and each step into one row.

The set of sites grows during the first step that records anything and is fixed from then on;
a site missing from a later step gets a row of NaN, and new sites are ignored (and reported).
During that first step the recorder also traces the layer graph (``graph.GraphTracer``) and decides
which container outputs are sites: those that no recorded site produced.
The recorder owns the rows: it merges each step's partials into its ``RowStage`` and hands the
filled rows out with ``take()``.

With ``grads``, each recorded output that requires a gradient gets a tensor hook for the step: in the
backward pass it computes the moments of d(loss)/d(output) into the same arena, as column
``S + site`` of the row (S: the number of sites), so that the gradients' statistics are merged,
staged and written with the outputs' (``grad_stats`` in the file). A tensor hook registered before an
in-place module changes its tensor receives the gradient with respect to the value before the change
(PyTorch's rule): a BatchNorm's output followed by ``ReLU(inplace=True)`` gets its own gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import partial

import numpy as np
import torch
from torch import nn

from ..runfile.format import GRAD_STATS, PARAM_GROUPS, STATS, SiteGraph, unit_total
from ..stats.arena import Arena, Partial
from ..stats import c_backend
from ..stats.cores import RecorderCore
from ..stats.dispatch import MomentKernel
from ..stats.histogram import BINS, Histograms
from ..stats.merge import RING_BUFFERS, RING_BYTES, Layout, PartialRing, arrangement, merge_now
from .graph import GraphTracer
from .sites import Site, floating_outputs, plain, site_name, unit_dim
from .staging import RowStage, StagedRows, stage_capacity


MAX_UNITS = 1 << 16  # units per site with per-unit moments (the dead fraction); more: none
MAX_RINGS = 4  # rings of recent arrangements kept (a model whose steps alternate between two reuses them)


class Recorder(RecorderCore):
    """Collects the partials of the current step; ``end_step`` reduces them to a row.

    ``seal(step, elapsed, scalars)`` (``RecorderCore``'s, in C) is ``end_step`` in the common case, where there is
    nothing to decide: a step of CPU sites arranged as the last one (its ring has room for the row, which follows
    the ring's rows), no histogram, no parameters, no new site to report, every scalar a number or a one-value CPU
    tensor that has a column. What the training thread then does at the end of the step: the row's step, time and
    scalars appended to the stage's lists, and the arena's row counted into the ring (written there in place: the
    arena was aimed at it), the arena aimed at the next row; the writer thread merges the ring's rows. It returns
    0, having changed nothing, in any other case (``end_step`` then), 1 when it ended the step, 2 when it did and
    the stage or the ring is full (or holds ``RING_BYTES`` of handed-over rows): a flush is due. The fields it
    reads are ``RecorderCore``'s, ``RingCore``'s, ``StageCore``'s and ``ArenaCore``'s."""

    def __init__(self, kernel: MomentKernel, *, dead_eps: float, rows_per_flush: int, grads: bool = False,
                 params: Sequence[str] = (), on_error: Callable[[Exception], None] | None = None,
                 hooked: Sequence[str] = (), containers: Collection[str] = (), partials: bool = False) -> None:
        """``hooked``: the selected modules' names; ``containers``: hooked modules whose outputs are
        recorded only when no recorded site produced them; ``grads``: record the outputs' gradients
        too; ``params``: the names of the parameter tensors whose values, gradients and updates are
        recorded (``observe_param``); ``on_error``: takes what a gradient hook raised (it never reaches
        the backward pass); ``partials``: keep each row's mergeable partials too (a rank of a
        distributed run: ``unit_columns``)."""
        self.kernel = kernel
        self.partials = partials
        self.unit_columns: np.ndarray | None = None  # (columns, 2): first unit column (−1: none), units
        self.dead_eps = dead_eps
        self.rows_per_flush = rows_per_flush
        self.grads = grads
        self._on_error = on_error
        self._grad_partials: list[tuple[int, Partial]] = []
        self.params = list(params)
        self._param_partials: list[tuple[int, Partial]] = []  # (group × P + parameter, partial)
        self._generation = 0  # changes when a step ends or is discarded: older gradient hooks do nothing
        self._flush_bytes = RING_BYTES  # handed-over rows that make seal() call for a flush
        self._leaf_hooks: list[torch.utils.hooks.RemovableHandle] = []  # gradient hooks on leaf tensors
        # a site's lane: (site, shape, strides, dtype, *the C kernel's call, [its last pair]) for the outputs of its
        # first call in a step when they look like the last ones (the common case after the first step: one C call,
        # no lookups; the hooks run it themselves, c_backend.lane_hook, which reads _lanes, _arena and _partials)
        self._lane_table: dict[str, tuple] = {}
        self._lanes = self._lane_table  # the table in use: an empty one in steps that need the general path
        self._lanes_possible = False  # set at start(): CPU sites (a host arena), the C kernel, no gradient hooks
        self.hist_now = False  # set by the probe before each step that takes a histogram row
        self._hist: Histograms | None = None  # the step's histograms of the outputs …
        self._grad_hist: Histograms | None = None  # … and of their gradients
        self.stage: RowStage | None = None
        self.sites: list[Site] = []
        self._index: dict[str, int] = {}
        self.device: torch.device | None = None
        self.ignored: set[str] = set()
        self.unitless: set[str] = set()  # sites with more than MAX_UNITS units, recorded without units
        self.sharded: set[str] = set()  # outputs that are tensor subclasses (DTensor, …): not recorded
        self.news = False  # whether one of these three sets has grown since the probe last reported them
        self._partials: list[tuple[int, Partial]] = []
        self._channel_first_shapes: set[torch.Size] = set()
        self._layouts: dict[tuple, Layout] = {}
        self._ring: PartialRing | None = None  # the ring of the current arrangement
        self._rings: dict[tuple, PartialRing] = {}  # the rings of recent arrangements, by key
        self._arena: Arena | None = None
        self._hooked = list(hooked)
        self._containers = frozenset(containers)
        self._tracer: GraphTracer | None = GraphTracer()
        self._called: set[str] = set()  # modules called during the first recorded step
        self._producers: set[str] = set()  # modules that produced a site
        self._passed_on: set[str] = set()  # container outputs that a recorded site produced: not sites
        self.graph = SiteGraph(edges=())

    @property
    def hist_now(self) -> bool:
        """Whether this step takes a histogram row (set by the probe before each recorded step)."""
        return self._hist_now

    @hist_now.setter
    def hist_now(self, value: bool) -> None:
        self._hist_now = value
        self._lanes = {} if value else self._lane_table  # histograms are the general path's: no lane then

    def observe(self, module_name: str, call_index: int, module: nn.Module, inputs: object, output: object) -> None:
        lane = self._lanes.get(module_name)
        if lane is not None and call_index == 0 and c_backend.run_lane(lane, output, self._arena, self._partials):
            return  # the site's lane: what _observe_one and the C backend do for this tensor, in one C call
        if self._tracer is not None:  # the first recorded step
            self._discover(module_name, call_index, module, inputs, output)
        elif type(output) is torch.Tensor and output.is_floating_point():  # one tensor
            if call_index:
                self._observe_one(site_name(module_name, call_index, ""), module, output)
            elif self._lanes_possible:
                self._make_lane(module_name, self._observe_one(module_name, module, output), output)
            else:
                self._observe_one(module_name, module, output)
        else:
            for suffix, tensor in floating_outputs(output):
                self._observe_one(site_name(module_name, call_index, suffix), module, tensor)

    def _make_lane(self, name: str, index: int | None, tensor: torch.Tensor) -> None:
        """Give site ``name`` the lane of ``tensor`` (just recorded as site ``index``), when the C kernel read it
        in place and this step may take lanes; else none. Called only when lanes are possible at all."""
        lane = None
        if index is not None and self._lanes is self._lane_table and tensor.numel():
            lane = self.kernel.lane(tensor, self.sites[index].unit_dim)
        if lane is not None:
            # its last pair: the one just recorded, which its next call at the same offset reuses (run_lane); so the
            # key of a ring made of this step's pairs is the next steps' pairs themselves, compared by identity
            last = self._partials[-1] if self._partials and self._partials[-1][0] is index else None
            self._lane_table[name] = (index, tensor.shape, tensor.stride(), tensor.dtype, *lane, [last])
        else:
            self._lane_table.pop(name, None)

    def _discover(self, module_name: str, call_index: int, module: nn.Module, inputs: object, output: object) -> None:
        tracer = self._tracer
        assert tracer is not None
        self._called.add(module_name)
        outputs = list(floating_outputs(output))
        container = module_name in self._containers
        if container:
            produced = {suffix for suffix, tensor in outputs if tracer.produced(tensor)}
            self._passed_on.update(site_name(module_name, call_index, suffix) for suffix in produced)
            outputs = [(suffix, tensor) for suffix, tensor in outputs if suffix not in produced]
        if not outputs:
            return
        sources = tracer.sources(inputs, (tensor for _, tensor in outputs))
        for suffix, tensor in outputs:
            index = self._observe_one(site_name(module_name, call_index, suffix), module, tensor)
            if index is not None:
                # a container's output comes from the sites inside it (and its inputs): traced from the output
                own = tracer.sources((tensor,)) if container and tensor.grad_fn is not None else sources
                tracer.add(tensor, index, own, inputs)
                self._producers.add(module_name)

    def _observe_one(self, name: str, module: nn.Module, tensor: torch.Tensor) -> int | None:
        if type(tensor) is not torch.Tensor and not plain(tensor):
            self.sharded.add(name)
            self.news = True
            return None
        index = self._index.get(name)
        if index is None:
            if self.started:  # the site set is fixed
                if name not in self._passed_on:  # not a container's output that a child produced
                    self.ignored.add(name)
                    self.news = True
                return None
            index = self._add_site(name, module, tensor)
        if tensor.numel() == 0:
            return index
        if self._arena is None:
            self._arena = Arena(self.device)
        self._partials.append((index, self.kernel(tensor, self.sites[index].unit_dim, self._arena)))
        if self.hist_now:
            self._hist = self._hist or Histograms(self._arena.device)
            self._hist.add(index, tensor)
        if self.grads and tensor.requires_grad:
            handle = tensor.register_hook(partial(self._on_grad, index, self._generation))
            if tensor.is_leaf:  # a module that returns a parameter or its input: the hook would stay on the
                self._leaf_hooks.append(handle)  # tensor for good, so it goes when the step ends
        return index

    def _on_grad(self, index: int, generation: int, grad: torch.Tensor) -> None:
        """A gradient hook: the moments of d(loss)/d(output) of site ``index``, in the backward pass of
        the step that registered it (a later backward through an old graph is not this step's)."""
        try:
            if (generation == self._generation and grad is not None and grad.layout == torch.strided
                    and grad.numel() and self._arena is not None):
                self._grad_partials.append((index, self.kernel(grad, self.sites[index].unit_dim, self._arena)))
                if self.hist_now:
                    self._grad_hist = self._grad_hist or Histograms(self._arena.device)
                    self._grad_hist.add(index, grad)
        except Exception as exc:  # never into the user's backward pass
            if self._on_error is None:
                raise
            self._on_error(exc)

    def _add_site(self, name: str, module: nn.Module, tensor: torch.Tensor) -> int:
        dim = unit_dim(module, tensor.shape, self._channel_first_shapes)
        if dim is not None and tensor.shape[dim] > MAX_UNITS:
            # per-unit moments would take 32 bytes a unit, several times over while merging: such a
            # site is recorded as one pseudo-unit (its dead fraction is NaN), and the probe says so
            dim = None
            self.unitless.add(name)
            self.news = True
        self.sites.append(Site(name=name, module_type=type(module).__name__, unit_dim=dim))
        self._index[name] = len(self.sites) - 1
        if self.device is None:
            self.device = tensor.device
        return len(self.sites) - 1

    def observe_param(self, group: int, index: int, tensor: torch.Tensor) -> None:
        """The moments of parameter ``index``'s values (group 0), gradient (1) or update (2) in this step;
        a sparse gradient (``nn.Embedding(sparse=True)``) is left out: its column stays NaN."""
        if tensor.layout != torch.strided or not tensor.numel():
            return
        if self._arena is None:
            self._arena = Arena(self.device or tensor.device)
        self._param_partials.append((group * len(self.params) + index, self.kernel(tensor, None, self._arena)))

    @property
    def has_site_partials(self) -> bool:
        """Whether a selected module's output was recorded in this step (not only gradients or parameters)."""
        return bool(self._partials)

    @property
    def has_partials(self) -> bool:
        return bool(self._partials or self._grad_partials or self._param_partials)

    @property
    def site_groups(self) -> tuple[str, ...]:
        """The groups of the sites' statistics: ``stats``, and ``grad_stats`` with ``grads``."""
        return (STATS, GRAD_STATS) if self.grads else (STATS,)

    @property
    def stat_groups(self) -> tuple[str, ...]:
        """Every group of a row's columns, side by side: the sites' (S columns each), then the
        parameters' (P columns each) when parameters are recorded."""
        return self.site_groups + (PARAM_GROUPS if self.params else ())

    @property
    def columns(self) -> int:
        """Columns of a row: the sites once per site group, the parameters once per parameter group."""
        return len(self.sites) * len(self.site_groups) + (len(self.params) * len(PARAM_GROUPS) if self.params else 0)

    @property
    def started(self) -> bool:
        """Whether the first recorded step has ended: the sites and scalar columns are fixed."""
        return self.stage is not None

    def start(self, scalar_names: list[str]) -> None:
        """Fix the site set (later, unknown sites are ignored), the layer graph and the scalar columns;
        make the stage."""
        if self._tracer is not None:
            uncalled = tuple(name for name in self._hooked if name not in self._called)
            self.graph = SiteGraph(edges=tuple(sorted(self._tracer.edges)), uncalled=uncalled)
            self._tracer.clear()
            self._tracer = None
        device = self.device or torch.device("cpu")
        self._lanes_possible = (device.type == "cpu" and c_backend.run_lane is not None and self.kernel.use_c
                                and not self.grads)
        units = None
        if self.partials:
            self.unit_columns = self._unit_columns()
            units = unit_total(self.unit_columns)
        capacity = stage_capacity(self.rows_per_flush, self.columns, units)
        self.stage = RowStage(capacity, self.columns, scalar_names, device, units)

    def _unit_columns(self) -> np.ndarray:
        """Where each column's per-unit partials go: the units of each site's first call in the first
        recorded step, for its outputs' column and its gradients' column; none for the parameters'."""
        units: dict[int, int] = {}
        for site, part in self._partials:
            if part.units and site not in units and self.sites[site].unit_dim is not None:
                units[site] = part.units
        sites = len(self.sites)
        columns = np.full((self.columns, 2), -1, dtype=np.int64)
        first = 0
        for group in range(len(self.site_groups)):
            for site, count in sorted(units.items()):
                columns[group * sites + site] = (first, count)
                first += count
        return columns

    def end_step(self, step: int, elapsed: float, scalars: dict[str, float | torch.Tensor]) -> None:
        """Turn this step's partials into the next row of the stage (``start`` first)."""
        stage = self.stage
        assert stage is not None, "start() comes before the first end_step()"
        row = stage.add_row(step, elapsed, scalars)
        if self.hist_now:  # a histogram row: the outputs' (and the gradients') counts, side by side
            sites = len(self.sites)
            counts = [torch.zeros((sites, BINS), dtype=torch.float64, device=stage.device) if h is None else h.take(sites)
                      for h in ((self._hist, self._grad_hist) if self.grads else (self._hist,))]
            stage.add_hist(row, torch.cat(counts))
        self._finish_step(stage, row)

    @property
    def hist_groups(self) -> tuple[str, ...]:
        """The histogram datasets of the file: ``counts``, and ``grad_counts`` with ``grads``."""
        return ("counts", "grad_counts") if self.grads else ("counts",)

    def add_scalar(self, name: str) -> bool:
        """Give scalar ``name`` a column from this row on (``start`` first); False when there is no room."""
        assert self.stage is not None, "start() comes before scalars"
        return self.stage.add_scalar(name)

    @property
    def full(self) -> bool:
        """Whether a flush is due: the stage holds as many rows as a flush takes, or the ring that gathers
        them is full, or the rows handed over for the writer thread to merge hold RING_BYTES."""
        stage = self.stage
        return stage is not None and (stage.full or self.ring_full or stage.deferred_bytes >= RING_BYTES)

    @property
    def dropped_rows(self) -> int:
        """Rows dropped because no host slot was free (the disk could not keep up)."""
        return 0 if self.stage is None else self.stage.dropped_rows

    def take(self) -> StagedRows | None:
        """The rows staged so far, on their way to the host; None when there are none (or no room)."""
        if self.stage is None:
            return None
        self._drain(self.stage)
        arena, ring = self._arena, self._ring
        if arena is not None and arena.aimed:  # at a row of the ring, whose rows may have been handed over now
            if arena.used or ring is None:
                arena.unaim()  # a flush within a step: its partials go along to the arena's own buffer
            else:
                ring.aim(arena)
        return self.stage.take()

    def _finish_step(self, stage: RowStage, index: int) -> None:
        """Gather this step's partials in the ring, to be merged into ``stage`` row ``index`` later: by
        the writer thread on the CPU, by kernels launched at ``_drain`` on other devices."""
        partials, self._partials = self._partials, []
        if self._grad_partials:  # the gradients' columns follow the sites'
            sites = len(self.sites)
            partials += [(sites + index, part) for index, part in self._grad_partials]
            self._grad_partials = []
        if self._param_partials:  # then the parameters'
            first = len(self.sites) * len(self.site_groups)
            partials += [(first + column, part) for column, part in self._param_partials]
            self._param_partials = []
        self._end_generation()
        assert self._arena is not None
        key = arrangement(partials)
        ring = self._ring
        if ring is not None and ring.filled and (ring.key != key or not ring.follows(index)):
            # a part-filled ring (the arrangement changed) is merged now, as before the hand-over existed:
            # handing over its buffer for a row or two would hold memory for rows never written
            self._drain(stage, now=not ring.full)
        if ring is None or ring.key != key:
            ring = self._ring = self._rings.get(key)  # arrangements that alternate keep their rings
        if ring is None:
            layout = self._layouts.get(key)
            if layout is None:
                if len(self._layouts) >= 64:
                    self._layouts.clear()
                layout = self._layouts[key] = Layout.build(partials, self.columns, stage.device, self.unit_columns)
            buffers = RING_BUFFERS if self._hands_over(stage) else 1
            capacity = PartialRing.capacity_for(layout, stage.capacity, buffers)
            if capacity < (1 if buffers > 1 else 2):  # too wide to gather: merge this step on its own
                stage.set_stats(index, merge_now(layout, self._arena.row(), self.dead_eps))
                self._arena.clear()
                self._arena.unaim()  # (it may have been aimed at a row of a ring just handed over)
                return
            ring = self._ring = PartialRing(key, layout, capacity, stage.device, buffers)
            if len(self._rings) >= MAX_RINGS:
                self._rings.clear()
            self._rings[key] = ring
        ring.take_from(self._arena, index)

    @staticmethod
    def _hands_over(stage: RowStage) -> bool:
        """Whether rows are merged by the writer thread (CPU rows) instead of at ``_drain``."""
        return stage.device.type == "cpu"

    def _drain(self, stage: RowStage, *, now: bool = False) -> None:
        """Hand the rows waiting in the ring to ``stage``: as a segment the writer thread merges, or
        merged now (with ``now``, on the device, or when every buffer is still out)."""
        ring = self._ring
        if ring is None or not ring.filled:
            return
        segment = ring.hand_over(self.dead_eps) if self._hands_over(stage) and not now else None
        if segment is not None:
            stage.defer(segment)
        else:
            stage.set_stats(ring.first_row, ring.merge(self.dead_eps))

    @property
    def ring_full(self) -> bool:
        """Whether the ring's buffer is full: flushing now hands it over before the next step needs room."""
        return self._ring is not None and self._ring.full

    @property
    def idle_containers(self) -> list[str]:
        """Containers that produced no site in the first recorded step: their hooks can go."""
        return sorted(self._containers - self._producers)

    def release_memory(self) -> None:
        self._end_generation()  # at close: no hook of this recorder computes anything any more
        self.kernel.release_memory()
        if self._tracer is not None:
            self._tracer.clear()

    def _end_generation(self) -> None:
        """The step's gradient hooks go quiet (a later backward through its graph adds nothing), and those
        on leaf tensors are removed."""
        self._generation += 1
        for handle in self._leaf_hooks:
            handle.remove()
        self._leaf_hooks = []

    def discard_step(self) -> None:
        self._partials = []
        self._grad_partials = []
        self._param_partials = []
        self._end_generation()
        for hist in (self._hist, self._grad_hist):
            if hist is not None:
                hist.take(0)
        if self._arena is not None:
            self._arena.clear()
