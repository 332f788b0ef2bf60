"""Progress of a recipe in the terminal: a rich bar per configuration and a line when each ends.

It never reads device values: the training loop reports only step counts.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console


class RecipeProgress:
    def __init__(self, console: Console, refresh_s: float = 0.25) -> None:
        self.console = console
        self.refresh_s = refresh_s
        self._progress: Any = None
        self._task: Any = None
        self._label = ""
        self._last = 0.0
        self._started = time.perf_counter()

    def step(self, label: str, step: int, total: int | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if not self.console.is_terminal:
            if label != self._label:
                self._label, self._started = label, time.perf_counter()
            return
        if label != self._label:
            self._stop()
            self._label = label
            self._started = time.perf_counter()
            self._progress = Progress(TextColumn(f"  {label}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=self.console, transient=True)
            self._task = self._progress.add_task(label, total=total)
            self._progress.start()
        now = time.perf_counter()
        if now - self._last >= self.refresh_s or step == total:
            self._last = now
            self._progress.update(self._task, completed=step, total=total)

    def done(self, label: str, text: str) -> None:
        seconds = time.perf_counter() - self._started if label == self._label else 0.0
        self._stop()
        timing = f" ({seconds:.0f} s)" if seconds >= 1 else " (reused)" if label != self._label else ""
        self.console.print(f"  ✓ {label}{': ' + text if text else ''}{timing}", highlight=False, markup=False)
        self._label = ""

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
