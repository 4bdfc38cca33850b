"""One writer at a time in a site folder: pulls from cron and an admin's import must not
write the same ``.part`` file or ``catalog.json`` together.

An advisory ``flock`` on ``DIR/.lock`` (NFSv4 and Lustre honour it), released when the
process ends however it ends; a second writer is told who holds it and stops.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import EXIT_JOB_FAILED, FactoryError

LOCK = ".lock"


class Busy(FactoryError):
    """Another pull, bundle or import is writing the folder."""

    exit_code = EXIT_JOB_FAILED
    status = "busy"


@contextmanager
def site_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise Busy(f"{folder} is being written by {holder}; try again when it is done"
                       ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
