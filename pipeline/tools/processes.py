"""Running a command with its output going, line by line, to a job's log."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

Log = Callable[[str], None]


def run_logged(argv: list, log: Log, env: dict | None = None, cwd=None) -> None:
    """Run ``argv``; every output line goes to ``log``; CalledProcessError on failure."""
    log("$ " + " ".join(map(str, argv)))
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, errors="replace") as child:
        for line in child.stdout:
            log(line.rstrip("\n"))
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, argv)
