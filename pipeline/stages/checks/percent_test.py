"""``%test``: ``apptainer test`` on the SIF, unprivileged (the recipe's test.sh).

A test.sh that runs a workload (the app images: a small computation on 2 MPI ranks) prints
one summary line per workload starting with ``workload: `` (the numbers it checked, or
``FAILED: why``).  Those lines become the result's reason, passed or failed, so the
summary, JUnit file and report say what was computed without opening the log.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.catalogue.text import section_lines
from pipeline.planning.jobs import Job
from pipeline.stages.checks.results import TestResult, apptainer_exec, tail
from pipeline.stages.context import StageContext
from pipeline.tools.processes import Log

WORKLOAD = "workload: "
# A test.sh that prints the marker in a loop must not flood summary.json: the first ones.
MAX_LINES = 10
MAX_CHARS = 300


def workload_lines(output: str) -> list[str]:
    """The ``workload: `` lines of a test's output, in order, stripped, each cut to
    ``MAX_CHARS``, at most ``MAX_LINES`` of them."""
    found = []
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith(WORKLOAD):
            found.append(line if len(line) <= MAX_CHARS else line[:MAX_CHARS - 3] + "...")
            if len(found) == MAX_LINES:
                break
    return found


def reason(code: int, output: str) -> str:
    """The result's reason: the workload lines, and for a failure its exit code and the
    last other lines of output (the workload lines are not repeated there)."""
    lines = workload_lines(output)
    if not code:
        return "; ".join(lines)
    rest = "\n".join(line for line in output.splitlines()
                     if not line.strip().startswith(WORKLOAD))
    return "; ".join([f"exit {code}", *lines]) + f": {tail(rest)}"


def missing(job: Job, recipe_dir: Path) -> str | None:
    """Why the recipe has no test, or None: a Dockerfile recipe's is its test.sh, a
    definition file's its own ``%test`` section."""
    if job.recipe_file == "recipe.def":
        text = (recipe_dir / "recipe.def").read_text(encoding="utf-8")
        if not any(word == "%test" for _, word in section_lines(text)):
            return f"the recipe {job.recipe}/recipe.def has no %test section"
        return None
    if not (recipe_dir / "test.sh").exists():
        return f"the recipe {job.recipe} has no test.sh"
    return None


def check(job: Job, sif: Path, ctx: StageContext, work: Path, log: Log) -> TestResult:
    why_not = missing(job, ctx.catalogue_dir / job.recipe)
    if why_not:
        return TestResult("%test", "skipped", why_not)
    code, output = apptainer_exec(ctx, ["test", str(sif)], sif, log)
    return TestResult("%test", "failed" if code else "passed", reason(code, output))
