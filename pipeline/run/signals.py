"""SIGINT and SIGTERM during a command: stop, clean up, report, exit 130 or 143.

:class:`Interruption` installs handlers for both signals (main thread only).  The first
signal is recorded; in ``raise`` mode the handler also raises
:class:`pipeline.errors.Interrupted` in the main thread (planning, publishing), in
``flag`` mode it only records it and the scheduler's loop, which looks every half second,
stops the run itself.  A second signal ends the process at once: every live process group
is killed and the process exits with 128 + the signal's number, without a summary.

:func:`stop_jobs` is what the scheduler does on an interrupt: no new process may start,
the containers labelled with the run id are removed (``docker rm -f``), the live process
groups and any other child process are ended, and the jobs' scratch folders are removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.errors import Interrupted
from pipeline.names import sif_name
from pipeline.tools import processes
from pipeline.tools.apptainer import remove_containers

SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_WAIT = 20.0  # seconds to wait for the job threads to see their processes end


class Interruption:
    """The signal that interrupted the command, if any; see the module's text."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.mode = "raise"  # or "flag"
        self.event = threading.Event()
        self._previous: dict = {}

    @property
    def interrupted(self) -> bool:
        return self.signum is not None

    def error(self) -> Interrupted:
        return Interrupted(self.signum or signal.SIGINT)

    def check(self) -> None:
        """Raise Interrupted when a signal came."""
        if self.signum is not None:
            raise self.error()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # the second one: no more waiting
            processes.kill_now()
            os._exit(128 + signum)
        self.signum = signum
        self.event.set()
        if self.mode == "raise":
            raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGINT and SIGTERM inside the block (a no-op outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def flagging(self):
        """Inside the block a signal is only recorded (the caller looks at ``interrupted``)."""
        mode, self.mode = self.mode, "flag"
        try:
            yield self
        finally:
            self.mode = mode


def scratch_paths(scratch: Path, job_ids: Iterable[str]) -> list[Path]:
    """The scratch folders the convert and test stages use for these jobs."""
    paths = []
    for job_id in job_ids:
        stem = Path(sif_name(job_id)).stem
        paths += [scratch / stem, scratch / f"test-{stem}"]
    return paths


def stop_jobs(docker: str | None, run_id: str, threads_done: Callable[[], bool],
              cleanup: Iterable[Path], log: Callable[[str], None]) -> None:
    """End everything the run started, then remove ``cleanup`` (scratch, partial SIFs).

    Containers and processes are ended again every half second until ``threads_done()``
    (a job thread that goes on may still start one, e.g. the next test) or ``STOP_WAIT``
    seconds have passed."""
    deadline = time.monotonic() + STOP_WAIT
    removed: set[str] = set()
    killed: set[int] = set()
    first = True
    while True:
        if docker:
            removed.update(remove_containers(docker, run_id))
        killed.update(processes.stop_all(grace=2.0 if first else 0.5))
        killed.update(processes.kill_descendants())
        first = False
        if threads_done() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if docker:
        removed.update(remove_containers(docker, run_id))
    log(f"stopped: {len(removed)} container(s) removed, {len(killed)} process(es) ended")
    gone = 0
    for path in cleanup:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            gone += 1
        elif path.exists():
            path.unlink(missing_ok=True)
            gone += 1
    if gone:
        log(f"removed {gone} scratch folder(s) and partial file(s)")
