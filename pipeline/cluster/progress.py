"""Download progress: a rich bar per file on a terminal, plain lines in logs and cron mails.

Plain lines look like ``sjtuhpc/hpc-app-container:lammps-gnu-2022 amd64: 120/412 MB``,
one when a file starts, at most one every ``PLAIN_EVERY`` seconds while it downloads, and
one when it is complete.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

PLAIN_EVERY = 10.0
MB = 1_000_000


class Bars(AbstractContextManager):
    """``with Bars(console) as bars: update = bars.file(label, total)`` then ``update(done)``."""

    def __init__(self, console: Console, clock=time.monotonic):
        self.console = console
        self.clock = clock
        self.live = console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(), console=console,
            transient=False) if self.live else None

    def __enter__(self) -> Bars:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def file(self, label: str, total: int):
        """A callable taking the bytes present so far."""
        if self._progress is not None:
            task = self._progress.add_task(label, total=total)
            return lambda done: self._progress.update(task, completed=done)
        return _Lines(self.console, label, total, self.clock)


class _Lines:
    """Plain progress lines for one file."""

    def __init__(self, console: Console, label: str, total: int, clock):
        self.console, self.label, self.total, self.clock = console, label, total, clock
        self.printed_at: float | None = None
        self.printed: int | None = None

    def __call__(self, done: int) -> None:
        now = self.clock()
        due = self.printed_at is None or done >= self.total or \
            now - self.printed_at >= PLAIN_EVERY
        if due and done != self.printed:
            self.printed_at, self.printed = now, done
            self.console.print(f"{self.label}: {_mb(done)}/{_mb(self.total)} MB")


def _mb(size: int) -> str:
    return f"{size / MB:.0f}" if size >= 10 * MB else f"{size / MB:.1f}"
