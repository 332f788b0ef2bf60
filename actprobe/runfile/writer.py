"""The background thread that turns staged rows into committed rows of the run file."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .storage import RunFileWriter


class Batch(Protocol):
    """Rows staged on the host by the engine. The writer thread calls ``ready()`` as soon as it takes
    the batch (it returns once the rows are complete on the host; a second call does nothing), reads
    ``stats()`` and ``scalars()``, then ``release()`` (always, also after an error) so that their
    memory can be reused."""

    steps: np.ndarray  # (n,) int64
    times: np.ndarray  # (n,) float64
    scalar_names: list[str]  # the columns of scalars(): the names so far, in order of first appearance

    def ready(self) -> None: ...
    def stats(self) -> np.ndarray: ...  # (n, S, len(STATISTICS))
    def hist(self) -> list[tuple[int, np.ndarray]]: ...  # histogram rows: (row of the batch, (columns, bins))
    def scalars(self) -> np.ndarray: ...  # (n, number of scalar columns)
    def partials(self) -> tuple[np.ndarray, np.ndarray] | None: ...  # distributed runs: (n, C, 8), (n, U, 3)
    def release(self) -> None: ...


MAX_GROUP = 64  # batches committed together when they queued up while the last commit was written
MIN_COMMIT_SECONDS = 0.02  # a batch waits at most this long for others to join its commit
GROUP_TARGET = 4  # … and no longer once this many more are queued


class BackgroundWriter:
    """Writes batches on its own thread, which creates the file at once (with no rows yet). Batches
    that queued up while a commit was being written are committed together, as one append.

    An error stops the thread; it is kept in ``error`` for the probe to report. Batches queued
    after an error are released without being written.
    """

    def __init__(self, open_file: Callable[[], RunFileWriter]) -> None:
        self._open_file = open_file
        self._file: RunFileWriter | None = None
        # put from the training thread at each flush: SimpleQueue's put is one C call (Queue's, ~50 µs of Python)
        self._queue: queue.SimpleQueue[Batch | threading.Event | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.rows_written = 0
        self._thread = threading.Thread(target=self._run, name="actprobe-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        self._queue.put(batch)

    def wait(self) -> None:
        """Block until every batch submitted so far is committed (or failed)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def close(self) -> None:
        """Commit what is queued, close the file and end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        try:
            self._file = self._open_file()
        except BaseException as exc:  # reported by the probe, never raised into training
            self.error = exc
        waiting: list[Batch | threading.Event | None] = []  # an item taken out of turn: handled next
        while True:
            item = waiting.pop() if waiting else self._queue.get()
            if item is None:
                break
            if isinstance(item, threading.Event):  # put by wait(): everything before it is done
                item.set()
                continue
            self._prepare(item)
            # a lone batch waits up to MIN_COMMIT_SECONDS for GROUP_TARGET more to join its commit (a commit
            # is two file flushes, and HDF5 holds Python's lock while it writes: fewer, larger commits leave
            # the training thread more time); fast steps fill the group at once and never wait long
            # (each batch is made ready as soon as it is taken: the engine gets its buffers back meanwhile)
            deadline = time.monotonic() + MIN_COMMIT_SECONDS
            while self._queue.qsize() < GROUP_TARGET and time.monotonic() < deadline:
                time.sleep(0.001)
            group = [item]
            while len(group) < MAX_GROUP:  # what queued up meanwhile goes into the same commit
                try:
                    queued = self._queue.get_nowait()
                except queue.Empty:
                    break
                if queued is None or isinstance(queued, threading.Event):
                    waiting.append(queued)
                    break
                self._prepare(queued)
                group.append(queued)
            self._write_group(group)
        self._close_file()

    def _prepare(self, batch: Batch) -> None:
        """Make the batch ready now (its rows complete on the host); an error is kept, and stops the writer."""
        try:
            if self.error is None:
                batch.ready()
        except BaseException as exc:  # reported by the probe, never raised into training
            self.error = exc

    def _write_group(self, group: list[Batch]) -> None:
        """Commit the batches as one append (one two-phase commit for all their rows); release them always."""
        try:
            if self.error is None:  # every batch was made ready when it was taken (``_prepare``)
                names = max((b.scalar_names for b in group), key=len)  # names only grow: the last has them all
                parts = [(b.steps, b.times, b.stats(), _widened(b.scalars(), len(names))) for b in group]
                hist, offset = [], 0
                for b in group:  # histogram rows, numbered within the whole append
                    hist += [(offset + row, counts) for row, counts in b.hist()]
                    offset += len(b.steps)
                partials = [b.partials() for b in group]
                kept = None if any(p is None for p in partials) else tuple(
                    np.concatenate(column) for column in zip(*partials))  # type: ignore[misc]
                self._file.append(*(np.concatenate(column) for column in zip(*parts)), hist=hist, partials=kept,
                                  scalar_names=names)
                self.rows_written = self._file.rows
        except BaseException as exc:  # reported by the probe, never raised into training
            self.error = exc
        finally:
            for batch in group:
                batch.release()

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except BaseException as exc:
                self.error = self.error or exc


def _widened(scalars: np.ndarray, width: int) -> np.ndarray:
    """(n, width): a batch's scalar columns, NaN in the columns of names that appeared after it was staged."""
    if scalars.shape[1] == width:
        return scalars
    out = np.full((scalars.shape[0], width), np.nan)
    out[:, :scalars.shape[1]] = scalars
    return out
