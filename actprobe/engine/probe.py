"""``Probe``: record per-layer activation statistics of a model into an HDF5 run file."""

from __future__ import annotations

import atexit
import os
import time
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ActprobeWarning, OptionError, user_stacklevel
from ..runfile.format import SiteGraph
from ..stats.cores import ProbeCore
from ..stats.dispatch import MomentKernel
from .hooks import HookEngine
from .params import ParamWatch, parameter_names
from .ranks import RankPlace, place
from .recorder import MAX_UNITS, Recorder
from .scalars import accepted, recordable_names
from .selection import Select, containers, select_modules
from .settings import DEAD_EPS, FLUSH_EVERY, FLUSH_SECONDS, KERNEL_OPTIONS, NEAR_ZERO_EPS, ProbeSettings
from .sink import FileSink

_open_probes: weakref.WeakSet[Probe] = weakref.WeakSet()


class Probe(ProbeCore):
    """Records activation statistics of every selected module, every recorded training step.

    Use it as a context manager around the training loop and call ``step()`` once per step::

        with actprobe.Probe(model, "run.h5") as probe:
            for x, y in loader:
                loss = loss_fn(model(x), y)
                loss.backward(); opt.step(); opt.zero_grad()
                probe.step(loss=loss)

    ``step(**scalars)`` ends one training step; keyword values (numbers or 1-element tensors) are recorded too
    (device tensors are copied on their device: recording them does not synchronise). Its common case runs in C
    (``ProbeCore``, ``stats/_cstate.c``), every other one in Python (``_step_general``).

    Statistics are computed on the tensors' own device without any host–device synchronisation;
    rows reach the file in batches from a background thread. Recording never raises into the
    training loop: a failure is reported once as an ``ActprobeWarning`` and recording stops, leaving
    a valid file with every row committed before it.

    Args:
        model: the model; it is not modified, and is not kept alive by the probe.
        path: the HDF5 run file to create (parent folders are created).
        select: which modules to record; see ``actprobe.engine.selection.select_modules``. Default: every
            leaf module.
        every: record every k-th step (steps 0, k, 2k, …).
        near_zero_eps: an element counts as near zero when ``|x| <= near_zero_eps``.
        dead_eps: a unit counts as dead when its std over all other dimensions is ``<= dead_eps``.
        flush_every: commit rows to the file at least every this many steps.
        flush_seconds: and at least this often (checked at each ``step()``).
        train_only: skip forwards made in eval mode or with gradients disabled.
        grads: also record, for every site, the statistics of the gradient of the loss with respect to
            its output (``grad_stats`` in the file), from the backward passes of each recorded step,
            merged over them as forward calls are. Gradients themselves are never changed.
        params: also record, for every parameter tensor of ``optimizer``, the statistics of its values
            and its gradient just before the optimizer's step and of the step's change Δw
            (``param_stats``, ``param_grad_stats``, ``update_stats``; the update-to-data ratio is
            ``update_stats/std / param_stats/std``), through the optimizer's step hooks, at recorded
            steps only. Needs ``optimizer``.
        optimizer: the ``torch.optim.Optimizer`` that trains ``model`` (for ``params``).
        hist_every: every this many recorded steps (0: never), also a fixed-bin histogram of every
            site's output (and gradient, with ``grads``), computed on the device (``hist/`` in the file;
            bins: ``actprobe.stats.histogram.HIST_EDGES``).
        meta: extra root attributes for the file (str, bool, int, float, flat lists).
        overwrite: replace an existing file at ``path`` instead of refusing.
        distributed: whether this process is one rank of a distributed run. None (the default): when it
            belongs to a ``torch.distributed`` process group of more than one process (or runs under
            torchrun). Then ``path`` is the run's folder: each rank writes
            ``path/segment-<k>/rank-<r>.h5`` (``k``: torchelastic's restart count) without any
            communication, and ``actprobe.read(path)`` merges the ranks into the statistics of the
            global batch. False: a file of its own at ``path`` for every process.
        group: the process group whose ranks make up the run (default: the default group).
        kernel: which statistics backend computes the moments: ``auto`` (the C kernel for CPU
            tensors, Triton for CUDA tensors, torch operations where neither is available), or
            ``torch`` (torch operations everywhere: for comparisons and benchmarks).

    Raises:
        OptionError: an option has a wrong type or value.
        SelectionError: ``select`` matches no module.
        RunFileError: the path exists (and not ``overwrite``), is locked by another writer, or
            cannot be created.
    """

    def __init__(self, model: nn.Module, path: str | os.PathLike[str], *, select: Select = None,
                 every: int = 1, near_zero_eps: float = NEAR_ZERO_EPS, dead_eps: float = DEAD_EPS,
                 flush_every: int = FLUSH_EVERY, flush_seconds: float = FLUSH_SECONDS, train_only: bool = True,
                 grads: bool = False, params: bool = False, optimizer: torch.optim.Optimizer | None = None,
                 hist_every: int = 0, meta: Mapping[str, Any] | None = None, overwrite: bool = False,
                 kernel: str = "auto", distributed: bool | None = None, group: Any = None) -> None:
        self.settings = ProbeSettings(every=every, near_zero_eps=near_zero_eps, dead_eps=dead_eps,
                                      flush_every=flush_every, flush_seconds=flush_seconds, train_only=train_only,
                                      grads=grads, params=params, hist_every=hist_every, overwrite=overwrite,
                                      meta=meta or {}, kernel=kernel)
        # the settings step() reads, as fields of the probe (ProbeCore): one read each in a step that left the caches
        # cold; set before the path is claimed (the settings bound them to what the fields hold)
        self._every, self._hist_every = self.settings.every, self.settings.hist_every
        self._flush_seconds = self.settings.flush_seconds
        if params and optimizer is None:
            raise OptionError("params=True records the optimizer's steps: pass it too, "
                              "Probe(model, path, params=True, optimizer=opt)")
        named = parameter_names(model, optimizer) if params else []
        param_names, self._param_ndims = [name for name, _ in named], [ndim for _, ndim in named]
        modules = select_modules(model, select)
        extra = containers(model) if select is None else []
        if distributed is not None and not isinstance(distributed, bool):
            raise OptionError(f"distributed must be True, False or None, got {distributed!r}")
        self.path = Path(path)
        self.rank: RankPlace | None = place(distributed, group)  # None: a single-process run
        if self.rank is not None:
            self.rank = self.rank.choose_file(self.path, overwrite)
        # the file this process writes: ``path`` itself, or this rank's file in the run folder ``path``
        self.file = self.path if self.rank is None else self.rank.file(self.path)
        self._sink = FileSink(self.file, overwrite=overwrite)
        self._recorder = Recorder(MomentKernel(near_zero_eps, **KERNEL_OPTIONS[kernel]), dead_eps=dead_eps,
                                  rows_per_flush=self.settings.rows_per_flush, grads=grads, params=param_names,
                                  on_error=self._on_call_error, hooked=[name for name, _ in modules],
                                  containers=[name for name, _ in extra], partials=self.rank is not None)
        self._step = 0
        self._writer = None  # the sink's writer thread, once the file is open (step checks it for errors)
        self._recorder.hist_now = hist_every > 0  # recorded step 0 is histogram row 0
        self._started = time.perf_counter()
        self._last_flush = self._started
        self._warned: set[str] = set()
        self.error: BaseException | None = None
        self._staged_rows_valid = True  # False after a failure that may have left a row half-made
        self.closed = False
        try:
            self._engine = HookEngine(model, modules + extra, self._recorder.observe, self._on_call_error,
                                      train_only=train_only, lane_owner=self._recorder)
            self._params = (ParamWatch(optimizer, self._recorder.observe_param, lambda: self.recording,
                                       self._on_call_error) if params else None)
        except BaseException:
            if getattr(self, "_engine", None) is not None:
                self._engine.remove()  # its hooks, and its hold on the swapped Module._call_impl
            self._sink.release()
            raise
        self._calls = self._engine.call_counts  # cleared by step() as HookEngine.new_step clears it
        self._forked = False  # set in a child made with fork: the file and its lock are the parent's
        _open_probes.add(self)

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public API ------------------------------------------------------------------------------
    @property
    def step_index(self) -> int:
        """The index of the step in progress (the number of ``step()`` calls so far)."""
        return self._step

    @property
    def sites(self) -> list[str]:
        """Names of the recorded sites; complete once the first recorded step has ended."""
        return [site.name for site in self._recorder.sites]

    @property
    def recording(self) -> bool:
        """Whether the current step is being recorded."""
        return (self.error is None and not self.closed and not self._forked
                and self._step % self.settings.every == 0)

    @property
    def graph(self) -> SiteGraph:
        """Which sites feed which (column indices of ``sites``), traced in the first recorded step, and
        the selected modules that were never called then; empty before that step has ended."""
        return self._recorder.graph

    @property
    def rows_written(self) -> int:
        """Rows committed to the file so far."""
        return self._sink.rows_written

    @property
    def kernels(self) -> tuple[str, ...]:
        """The statistics backends that have served this probe's tensors so far (``C``, ``torch``, ``Triton``)."""
        return tuple(sorted(self._recorder.kernel.backends_used))

    # step(**scalars): ProbeCore's, written in C for the common case (stats/_cstate.c), which hands every other call
    # to _step_general; without the C extension, ProbeCore.step calls _step_general (stats/cores.py)

    def _step_general(self, /, **scalars: float | int | torch.Tensor) -> None:
        """``step`` in every case: the end of a recorded step in the common case (``Recorder.seal``), else the
        recorder's general path; the hooks for the next step, the writer's state and a flush when one is due."""
        self._end_step(scalars, try_seal=True)

    def _step_declined(self, /, **scalars: float | int | torch.Tensor) -> None:
        """``step`` once ``Recorder.seal`` declined it (``ProbeCore.step`` tried it): the general path, without
        reading the scalars for ``seal`` again."""
        self._end_step(scalars, try_seal=False)

    def _end_step(self, scalars: dict[str, Any], *, try_seal: bool) -> None:
        if self._forked:  # the parent records; the child leaves its file alone
            return
        if self.closed:
            self._warn_once("closed", "Probe.step() called after the probe was closed; ignored")
            return
        try:
            recorded = self.recording
            flush = False
            if recorded:
                sealed = try_seal and self._recorder.seal(self._step, time.perf_counter() - self._started, scalars)
                if sealed:
                    flush = sealed == 2
                else:
                    self._end_recorded_step(scalars)
                    flush = self._recorder.started and self._recorder.full
                self._engine.new_step()
            self._step += 1
            # between two unrecorded steps nothing changes but the time (after a failure: once more, for the hooks),
            # nor between two recorded ones without histograms
            if (recorded != self.recording or (recorded and self._hist_every)
                    or (self.error is not None and self._engine.attached)):
                self._prepare_next_step()
        except Exception as exc:  # the profiler never crashes training
            self._fail(exc)
            return
        self._finish_step(flush)

    def _finish_step(self, flush: bool) -> None:
        """The end of ``step`` once the step is counted: stop if the writer thread failed; flush when ``flush`` or
        when ``flush_seconds`` have passed since the last flush (once the file's columns are known)."""
        try:
            self._check_writer()
            if flush or (time.perf_counter() - self._last_flush >= self._flush_seconds and self._recorder.started):
                self._flush()
        except Exception as exc:  # the profiler never crashes training
            self._fail(exc)

    def _prepare_next_step(self) -> None:
        """Hooks, lanes and histograms as the step that begins now needs them."""
        recording = self.recording
        self._engine.active = recording
        every, hist_every = self.settings.every, self.settings.hist_every
        self._recorder.hist_now = recording and hist_every > 0 and (self._step // every) % hist_every == 0
        if recording:
            self._engine.attach()
        else:  # an unrecorded step runs without hooks: PyTorch's fast path (but see HookEngine.detach)
            self._engine.detach()

    def begin_forward(self) -> None:
        """Say that a new forward pass begins: module calls are numbered from 0 again (``name``, then
        ``name#1`` for a second call within the pass). The probe knows it by itself when the model it
        watches is called; a loop that calls only its submodules (Lightning's ``training_step``) says
        so before each batch, so that several forwards in one step (gradient accumulation) merge into
        the same sites."""
        self._engine.new_step()

    def flush(self, *, wait: bool = False) -> None:
        """Send every recorded row to the writer; with ``wait``, return once they are committed."""
        if self.closed or not self._staged_rows_valid or self._forked:
            return
        try:
            self._flush()
            if wait:
                self._sink.wait()
                self._check_writer()
        except Exception as exc:
            self._fail(exc)

    def close(self) -> None:
        """Remove every hook, commit the remaining rows and close the file. Idempotent.

        In a child made with ``fork`` it only removes the hooks: the file and its lock stay the parent's.
        """
        if self.closed:
            return
        if self._params is not None:
            self._params.remove()
        if self._forked:
            self._engine.remove()
            self.closed = True
            self._sink.release()  # closes the child's copy of the lock's descriptor, nothing more
            return
        try:
            try:
                self._engine.remove()
                if self._staged_rows_valid:
                    self._flush()
            finally:  # the writer commits what it holds and closes the file, also after a failed flush
                self._sink.close()
            self._check_writer()
        except Exception as exc:
            self._fail(exc)
        finally:
            self.closed = True
            self._recorder.release_memory()
            self._sink.release()
            _open_probes.discard(self)
        self._report_unrecorded()
        dropped = self._recorder.dropped_rows
        if dropped:
            self._warn_once("dropped", f"{dropped} rows were dropped because writing "
                            f"{self.file} could not keep up; raise flush_every or record less often (every=)")

    # -- internals -------------------------------------------------------------------------------
    def _on_call_error(self, exc: Exception) -> None:
        self._fail(exc, staged_rows_valid=True)  # the step in progress is dropped, earlier rows are whole

    def _end_recorded_step(self, scalars: Mapping[str, Any]) -> None:
        recorder = self._recorder
        if not recorder.has_partials:
            return
        if not recorder.started and not recorder.has_site_partials:
            recorder.discard_step()  # the optimizer ran, no selected module did: no sites to fix the file with
            return
        if not recorder.started:
            names = recordable_names(scalars)
            recorder.start(names)
            settings = self.settings
            attributes = {"near_zero_eps": settings.near_zero_eps, "dead_eps": settings.dead_eps,
                          "every": settings.every, "grads": settings.grads, "params": settings.params,
                          "hist_every": settings.hist_every, **settings.meta,
                          **(self.rank.attributes() if self.rank is not None else {})}
            self._sink.open(recorder.sites, names, attributes, settings.rows_per_flush, recorder.graph,
                            recorder.stat_groups, recorder.params, recorder.hist_groups if settings.hist_every else (),
                            self._param_ndims, recorder.unit_columns,
                            self._params.sharded if self._params is not None else ())
            self._writer = self._sink.writer
            self._engine.unhook(recorder.idle_containers)
        self._report_new_sites()
        recorder.end_step(self._step, time.perf_counter() - self._started,
                          accepted(scalars, recorder.add_scalar, self._warn_once))

    def _report_unrecorded(self) -> None:
        """At close: say why nothing, or not everything, reached the file."""
        if self.error is not None:
            return
        pending = self._recorder.has_partials
        if not self._sink.opened:
            if pending:
                why = "step() was never called after the recorded forwards; call probe.step() once per training step"
            elif self._recorder.sharded:
                why = (f"every selected output was a tensor subclass (a DTensor of tensor parallelism, or another "
                       f"kind), which is not recorded: {', '.join(sorted(self._recorder.sharded)[:5])}")
            elif self._engine.skipped:
                why = ("every forward ran in eval mode or without gradients, which train_only=True leaves out; "
                       "pass train_only=False to record them")
            else:
                why = "no selected module was called while the probe was open"
            self._warn_once("nothing", f"nothing was recorded, so {self.file} was not written: {why}")
        elif pending:
            self._warn_once("pending", "the forwards after the last probe.step() were not recorded: each "
                            "recorded step ends with probe.step()")

    def _report_new_sites(self) -> None:
        self._recorder.news = False
        if self._recorder.unitless:
            names = sorted(self._recorder.unitless)
            self._warn_once("unitless", f"sites with more than {MAX_UNITS:,} units are recorded without per-unit "
                            f"statistics, to bound the probe's memory (their dead fraction is NaN): "
                            f"{', '.join(names[:5])}{' …' if len(names) > 5 else ''}")
        if self._recorder.sharded:
            names = sorted(self._recorder.sharded)
            self._warn_once("sharded", f"outputs that are not plain tensors are not recorded (DTensors of tensor "
                            f"parallelism hold a shard on each rank, whose statistics are not the tensor's): "
                            f"{', '.join(names[:5])}{' …' if len(names) > 5 else ''}")
        if self._recorder.ignored:
            names = sorted(self._recorder.ignored)
            self._warn_once("new-sites", f"sites that first appeared after the first recorded step are not "
                            f"recorded: {', '.join(names[:5])}{' …' if len(names) > 5 else ''}")

    def _flush(self) -> None:
        self._last_flush = time.perf_counter()
        if not self._sink.opened:
            return
        batch = self._recorder.take()
        if batch is not None:
            self._sink.submit(batch)
        elif self._recorder.dropped_rows:
            self._warn_once("dropping", f"writing {self.file} is falling behind; rows are being dropped")

    def _check_writer(self) -> None:
        if self._sink.error is not None and self.error is None:
            self._fail(self._sink.error)

    def _fail(self, exc: BaseException, *, staged_rows_valid: bool = False) -> None:
        self._staged_rows_valid = self._staged_rows_valid and staged_rows_valid
        if self.error is None:
            self.error = exc
            self._engine.active = False
            try:
                self._engine.retire()  # it records no more: PyTorch's Module._call_impl back now, not at close
            except Exception:  # noqa: BLE001 — failing here must not raise either (close() retires it again)
                pass
            self._recorder.discard_step()
            warnings.warn(f"actprobe stopped recording to {self.file}: {type(exc).__name__}: {exc}. "
                          "Rows committed before this stay in the file; training goes on.",
                          ActprobeWarning, stacklevel=user_stacklevel())

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, ActprobeWarning, stacklevel=user_stacklevel())


@atexit.register
def _close_open_probes() -> None:
    for probe in list(_open_probes):
        probe.close()


def _disown_after_fork() -> None:
    """In a child made with ``fork``: the parent's probes stop recording here, and the child's exit
    leaves their files and locks alone."""
    for probe in list(_open_probes):
        probe._forked = True
        probe._engine.active = False
    _open_probes.clear()


os.register_at_fork(after_in_child=_disown_after_fork)
