"""The console every command prints to: rich, 160 columns wide when not on a terminal.

Given a ``mask`` (a ``pipeline.tools.credentials.Masker``, or any ``str -> str``), every
string printed or logged is masked before rich lays it out (so a secret is never wrapped
in two), and the rendered text is masked again before it is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console


class MaskedConsole(Console):
    """A rich Console that passes everything it writes through ``mask``."""

    def __init__(self, *args: Any, mask: Callable[[str], str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mask = mask

    def _masked(self, objects: tuple) -> list:
        return [self.mask(o) if isinstance(o, str) else o for o in objects]

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*self._masked(objects), **kwargs)

    def log(self, *objects: Any, **kwargs: Any) -> None:
        kwargs["_stack_offset"] = kwargs.get("_stack_offset", 1) + 1
        super().log(*self._masked(objects), **kwargs)

    def _render_buffer(self, buffer) -> str:  # the last step before the file
        return self.mask(super()._render_buffer(buffer))


def make_console(file: TextIO | None = None, mask: Callable[[str], str] | None = None
                 ) -> Console:
    """A console that wraps at 160 columns in logs and CI, and at the terminal's width;
    with ``mask``, one that masks whatever it prints."""
    if mask is None:
        console = Console(file=file, highlight=False, log_path=False)
    else:
        console = MaskedConsole(file=file, highlight=False, log_path=False, mask=mask)
    if not console.is_terminal:
        console.width = 160
    return console
