"""What a test returns, and running ``apptainer`` for a test as an unprivileged user."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.stages.context import StageContext
from pipeline.tools.processes import Log, run_captured

TAIL = 12


class TestsFailed(RuntimeError):
    """At least one test failed; the message names them and shows their last output."""


@dataclass(frozen=True)
class TestResult:
    name: str
    result: str  # passed | failed | skipped
    reason: str

    def to_json(self) -> dict:
        return {"name": self.name, "result": self.result, "reason": self.reason}


def apptainer_exec(ctx: StageContext, args: list, sif: Path, log: Log,
                   work: Path | None = None) -> tuple[int, str]:
    """``apptainer ARGS`` as an unprivileged user; the SIFs' folder is bound read-only, so a
    recipe's test code cannot change a SIF that is published later."""
    argv = ctx.apptainer.argv(args, [work] if work else [], unprivileged=True,
                              read_only=(sif.parent,))
    log("$ " + " ".join(map(str, argv)))
    done = run_captured(argv)
    output = done.stdout + done.stderr
    for line in output.splitlines():
        log(line)
    return done.returncode, output


def tail(output: str) -> str:
    """The last lines of a test's output, on one line, without Apptainer's INFO lines."""
    lines = [line for line in output.splitlines() if not line.startswith("INFO:")]
    return " | ".join(lines[-TAIL:])
