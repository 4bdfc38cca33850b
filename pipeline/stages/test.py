"""Test stage: a SIF proves it works before anything of it is published.

Tests (``pipeline/stages/checks/``, one module each), each reported as passed, failed or
skipped with its reason (never passed when it did not run):

* ``%test`` (``percent_test``): ``apptainer test`` on the SIF, unprivileged;
* ``mpi``: the pipeline's MPI hello world built and run inside the container on N ranks;
* ``mpi-hybrid``: a host MPI launching ``apptainer exec`` ranks (the cluster users' model);
* ``gpu`` (gpu images): the CUDA smoke program.

Any failed test fails the job.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.stages.checks import gpu, mpi, mpi_hybrid, percent_test
from pipeline.stages.checks.results import TestResult, TestsFailed
from pipeline.stages.context import StageContext
from pipeline.tools.processes import Log

__all__ = ["TestResult", "TestsFailed", "run_tests"]


def run_tests(job: Job, sif: Path, ctx: StageContext, log: Log) -> list[TestResult]:
    """Every test of the job, in order; the caller fails the job when one failed."""
    work = ctx.scratch / f"test-{sif.stem}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o777)  # the unprivileged user writes its binaries here
    checks = [percent_test, mpi, mpi_hybrid] + ([gpu] if job.kind == "gpu" else [])
    try:
        results = [c.check(job, sif, ctx, work, log) for c in checks]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in results:
        log(f"test {r.name}: {r.result}" + (f" ({r.reason})" if r.reason else ""))
    return results
