"""Running commands for a run: output line by line to a job's log, and a way to stop them all.

Every process started here runs in its own process group and is recorded in a registry of
live processes, so that an interrupted run can end them, children included
(:func:`stop_all`): SIGTERM to each group, SIGKILL to what is left after a grace period.
Once :func:`stop_all` was called no new process starts (:class:`Stopping`), so a job
thread that goes on after its command was killed cannot start the next one.
:func:`kill_descendants` ends whatever else this process started (``subprocess.run`` calls
that do not go through here).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

Log = Callable[[str], None]

_live: dict[int, subprocess.Popen] = {}
_lock = threading.Lock()
_stopping = threading.Event()


class Stopping(RuntimeError):
    """The run is being stopped: no new process may start."""


def _start(argv: list, **options) -> subprocess.Popen:
    with _lock:
        if _stopping.is_set():
            raise Stopping(f"the run is stopping; not starting {argv[0]}")
        child = subprocess.Popen(argv, start_new_session=True, **options)
        _live[child.pid] = child
    return child


def _forget(child: subprocess.Popen) -> None:
    with _lock:
        _live.pop(child.pid, None)


@contextlib.contextmanager
def popen(argv: list, **options) -> Iterator[subprocess.Popen]:
    """``with subprocess.Popen(argv, **options)``, but in its own process group and recorded,
    so that :func:`stop_all` ends it (for callers that need the Popen itself)."""
    child = _start(argv, **options)
    try:
        with child:
            yield child
    finally:
        _forget(child)


def run_logged(argv: list, log: Log, env: dict | None = None, cwd=None) -> None:
    """Run ``argv``; every output line goes to ``log``; CalledProcessError on failure."""
    log("$ " + " ".join(map(str, argv)))
    with popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
               env={**os.environ, **(env or {})}, cwd=cwd, errors="replace") as child:
        for line in child.stdout:
            log(line.rstrip("\n"))
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, argv)


def run_captured(argv: list, env: dict | None = None, cwd=None,
                 input: str | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, capture_output=True, text=True)``, but stoppable."""
    with popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
               env={**os.environ, **(env or {})} if env else None, cwd=cwd,
               errors="replace") as child:
        out, err = child.communicate(input)
    return subprocess.CompletedProcess(argv, child.returncode, out, err)


def live() -> list[int]:
    """The pids of the processes started here that are still running."""
    with _lock:
        return [pid for pid, child in _live.items() if child.poll() is None]


def stopping() -> bool:
    return _stopping.is_set()


def stop_all(grace: float = 3.0) -> list[int]:
    """Refuse new processes, then end every live one's process group: SIGTERM, and SIGKILL
    after ``grace`` seconds.  Returns the pids that were signalled."""
    with _lock:
        _stopping.set()
        children = list(_live.values())
    signalled = [c.pid for c in children if c.poll() is None]
    for pid in signalled:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(c.poll() is None for c in children):
        time.sleep(0.05)
    for child in children:
        if child.poll() is None:
            _signal_group(child.pid, signal.SIGKILL)
    return signalled


def kill_now() -> None:
    """SIGKILL every live process group at once (a second Ctrl-C)."""
    _stopping.set()
    for child in list(_live.values()):
        _signal_group(child.pid, signal.SIGKILL)


def allow_again() -> None:
    """Let processes start again (the next run in the same interpreter, e.g. in tests)."""
    _stopping.clear()


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # its own group: start_new_session
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def descendants(root: int | None = None, proc: Path = Path("/proc")) -> list[tuple[int, int]]:
    """(pid, process group) of every process below ``root`` (default: this one), read from
    /proc; [] where there is none."""
    root = os.getpid() if root is None else root
    children: dict[int, list[tuple[int, int]]] = {}
    try:
        entries = [e for e in proc.iterdir() if e.name.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        try:
            parent, group = int(fields[1]), int(fields[2])
        except (IndexError, ValueError):
            continue
        children.setdefault(parent, []).append((int(entry.name), group))
    found, stack = [], [root]
    while stack:
        for pid, group in children.get(stack.pop(), []):
            found.append((pid, group))
            stack.append(pid)
    return found


def kill_descendants(signum: int = signal.SIGKILL) -> list[int]:
    """Signal every process below this one that is in this one's process group: what a
    ``subprocess.run`` started.  Daemons in their own session (the lab's) are left alone;
    the processes started here are ended by :func:`stop_all`.  Returns the pids."""
    own = os.getpgrp()
    pids = [pid for pid, group in descendants() if group == own]
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
    return pids
