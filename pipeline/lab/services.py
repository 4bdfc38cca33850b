"""Background services started by the lab, tracked by pid files so that ``down`` stops only them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple
    ready: Callable[[], bool]  # True once the service answers
    timeout: float = 60.0


def pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def running_pid(run_dir: Path, name: str) -> int | None:
    """The pid the lab recorded for ``name``, if that process still lives."""
    try:
        pid = int(pid_file(run_dir, name).read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        return pid
    return pid


def start(service: Service, run_dir: Path, log_dir: Path) -> int:
    """Start ``service`` detached (its own session), log to a file, wait until it is ready."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    # The service keeps this file open after we return: no context manager.
    log = open(log_dir / f"{service.name}.log", "ab")
    process = subprocess.Popen(service.argv, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file(run_dir, service.name).write_text(f"{process.pid}\n")
    deadline = time.monotonic() + service.timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with code {process.returncode}; see "
                               f"{log_dir / (service.name + '.log')}")
        if service.ready():
            return process.pid
        time.sleep(0.5)
    raise RuntimeError(f"{service.name} did not answer within {service.timeout:.0f} s; see "
                       f"{log_dir / (service.name + '.log')}")


def stop(run_dir: Path, name: str, grace: float = 20.0) -> bool:
    """SIGTERM the recorded process (SIGKILL after ``grace`` s); False if it was not running."""
    pid = running_pid(run_dir, name)
    pid_file(run_dir, name).unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    return True


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a child of ours that exited is reaped, not counted."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:  # not our child: its parent reaps it
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
