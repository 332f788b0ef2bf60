"""The one progress display of actprobe: a rich bar for ``actprobe run`` and for each recipe configuration.

The training loop reports step counts and the loss as a device tensor; the display reads the
loss (a host–device sync) at most once per refresh, never per step.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console


class ProgressDisplay:
    """A bar that ``start``s, ``update``s and ``stop``s; the training loop's ``Progress``.

    Args:
        console: where to draw.
        refresh_s: the least time between two refreshes of the loss and speed.
        details: show the loss and steps/s beside the bar.
        transient: erase the bar when it stops (the recipes print a line per configuration instead).
        terminal_only: draw nothing when the console is not a terminal.
    """

    def __init__(self, console: Console, *, refresh_s: float = 0.5, details: bool = True, transient: bool = False,
                 terminal_only: bool = False) -> None:
        self.console = console
        self.refresh_s = refresh_s
        self.details = details
        self.transient = transient
        self.enabled = console.is_terminal or not terminal_only
        self._progress: Any = None
        self._task: Any = None
        self._total: int | None = None
        self._last = 0.0
        self._start = time.perf_counter()

    def start(self, label: str, total: int | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.stop()
        self._start, self._total = time.perf_counter(), total
        if not self.enabled:
            return
        columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
        if self.details:
            columns += [TextColumn("{task.fields[loss]}"), TextColumn("{task.fields[speed_text]}")]
        self._progress = Progress(*columns, TimeElapsedColumn(), console=self.console, transient=self.transient)
        self._task = self._progress.add_task(label, total=total, loss="", speed_text="")
        self._progress.start()

    def update(self, step: int, loss: Any = None) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if now - self._last < self.refresh_s and step != self._total:
            self._progress.update(self._task, completed=step)
            return
        self._last = now
        fields: dict[str, str] = {}
        if self.details:
            fields["speed_text"] = f"{step / max(now - self._start, 1e-9):.1f} steps/s"
            if loss is not None:
                fields["loss"] = f"loss {float(loss):.4f}"  # one device read per refresh, not per step
        self._progress.update(self._task, completed=step, **fields)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
