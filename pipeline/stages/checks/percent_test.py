"""``%test``: ``apptainer test`` on the SIF, unprivileged (the recipe's test.sh)."""

from __future__ import annotations

from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.stages.checks.results import TestResult, apptainer_exec, tail
from pipeline.stages.context import StageContext
from pipeline.tools.processes import Log


def check(job: Job, sif: Path, ctx: StageContext, work: Path, log: Log) -> TestResult:
    if not (ctx.catalogue_dir / job.recipe / "test.sh").exists():
        return TestResult("%test", "skipped", f"the recipe {job.recipe} has no test.sh")
    code, output = apptainer_exec(ctx, ["test", str(sif)], sif, log)
    if code:
        return TestResult("%test", "failed", f"exit {code}: {tail(output)}")
    return TestResult("%test", "passed", "")
