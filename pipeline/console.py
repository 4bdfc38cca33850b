"""The console every command prints to: rich, 160 columns wide when not on a terminal."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console


def make_console(file: TextIO | None = None) -> Console:
    """A console that wraps at 160 columns in logs and CI, and at the terminal's width."""
    console = Console(file=file, highlight=False, log_path=False)
    if not console.is_terminal:
        console.width = 160
    return console
