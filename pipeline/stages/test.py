"""Test stage: a SIF proves it works before anything of it is published.

Tests (``pipeline/stages/checks/``, one module each), each reported as passed, failed or
skipped with its reason (never passed when it did not run):

* ``%test`` (``percent_test``): ``apptainer test`` on the SIF, unprivileged;
* ``mpi``: the pipeline's MPI hello world built and run inside the container on N ranks;
* ``mpi-hybrid``: a host MPI (the host's, or the lab's cluster node's) launching ``apptainer
  exec`` ranks (the cluster users' model), each with the container's MPI library;
* ``gpu`` (gpu images): the CUDA smoke program compiled with ``nvcc``, run where a GPU is.

Both MPI tests run one hello world binary, compiled with the SIF's ``mpicc``, else with that
of ``compile_in`` (a SIF with the same MPI: the job's base SIF, for an image without
compilers), else they are skipped saying so.

Any failed test fails the job.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.stages.checks import gpu, mpi, mpi_hybrid, percent_test
from pipeline.stages.checks.results import TestResult, TestsFailed
from pipeline.stages.context import StageContext
from pipeline.tools.processes import Log

__all__ = ["TestResult", "TestsFailed", "run_tests"]


def run_tests(job: Job, sif: Path, ctx: StageContext, log: Log, *,
              compile_in: Path | None = None) -> list[TestResult]:
    """Every test of the job, in order; the caller fails the job when one failed."""
    work = ctx.scratch / f"test-{sif.stem}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o777)  # the unprivileged user writes its binaries here
    checks = [percent_test.check,
              *(partial(c.check, compile_in=compile_in) for c in (mpi, mpi_hybrid)),
              *([gpu.check] if job.kind == "gpu" else [])]
    try:
        results = [check(job, sif, ctx, work, log) for check in checks]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in results:
        log(f"test {r.name}: {r.result}" + (f" ({r.reason})" if r.reason else ""))
    return results
