"""``mpi``: the pipeline's MPI hello world compiled with the container's ``mpicc`` and run on
N ranks with its ``mpirun``; passes only when ranks 0..N-1 each answer once."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.stages.checks.results import TestResult, apptainer_exec, tail
from pipeline.stages.context import StageContext
from pipeline.tools.processes import Log

MPI_RANKS = 4


def mpi_family(job: Job) -> str | None:
    family = job.variables.get("mpi_family", "none")
    return None if family in ("none", "") else family


def mpirun(family: str, ranks: int) -> str:
    # Open MPI refuses more ranks than cores without --oversubscribe; MPICH's hydra has no
    # such flag and refuses it.
    return f"mpirun --oversubscribe -np {ranks}" if family == "openmpi" else f"mpirun -np {ranks}"


def ranks_seen(output: str, ranks: int) -> list[int]:
    return sorted(int(r) for r in re.findall(rf"hello from rank (\d+) of {ranks}\b", output))


def hello_source(work: Path) -> Path:
    source = work / "mpi_hello.c"
    source.write_text(resources.files("pipeline.stages.smoke").joinpath("mpi_hello.c").read_text())
    return source


def check(job: Job, sif: Path, ctx: StageContext, work: Path, log: Log) -> TestResult:
    family = mpi_family(job)
    if family is None:
        return TestResult("mpi", "skipped", "no MPI in this image (mpi: none)")
    source = hello_source(work)
    # The machine first: the log then shows an arm64 SIF really ran as aarch64 (QEMU).
    script = (f"echo \"machine $(uname -m)\" && mpicc -o {work}/hello {source} && "
              f"{mpirun(family, MPI_RANKS)} {work}/hello")
    code, output = apptainer_exec(ctx, ["exec", str(sif), "sh", "-c", script], sif, log, work)
    seen = ranks_seen(output, MPI_RANKS)
    if code or seen != list(range(MPI_RANKS)):
        return TestResult("mpi", "failed", f"exit {code}, ranks seen {seen}, expected 0..."
                          f"{MPI_RANKS - 1} once each: {tail(output)}")
    return TestResult("mpi", "passed", f"{MPI_RANKS} ranks, each once")
