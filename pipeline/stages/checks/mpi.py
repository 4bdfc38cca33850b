"""``mpi``: the pipeline's MPI hello world compiled with the container's ``mpicc`` and run on
N ranks with its ``mpirun``; passes only when ranks 0..N-1 each answer once.

An image without ``mpicc`` (an app whose runtime stage has no compilers) has the hello world
compiled in ``compile_in``, a SIF with the same MPI that has one (the job's base SIF); with
neither, the test is skipped saying so.  The binary is compiled once per job, into the test's
work folder, and ``mpi-hybrid`` runs the same one.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.stages.checks.results import TestResult, apptainer_exec, tail
from pipeline.stages.context import StageContext
from pipeline.tools.processes import Log

MPI_RANKS = 4
NO_MPICC = 99  # the compile script's exit code when the SIF has no mpicc


def mpi_family(job: Job) -> str | None:
    family = job.variables.get("mpi_family", "none")
    return None if family in ("none", "") else family


def mpirun(family: str, ranks: int) -> str:
    # Open MPI refuses more ranks than cores without --oversubscribe; MPICH's hydra has no
    # such flag and refuses it.
    return f"mpirun --oversubscribe -np {ranks}" if family == "openmpi" else f"mpirun -np {ranks}"


def ranks_seen(output: str, ranks: int) -> list[int]:
    return sorted(int(r) for r in re.findall(rf"hello from rank (\d+) of {ranks}\b", output))


def libraries_seen(output: str, ranks: int) -> dict[int, list[str]]:
    """rank -> the MPI library lines it printed (``MPI_Get_library_version``'s first line)."""
    seen: dict[int, list[str]] = {}
    for rank, library in re.findall(rf"hello from rank (\d+) of {ranks} on \S*; library: "
                                    r"([^\n]*)", output):
        seen.setdefault(int(rank), []).append(" ".join(library.split()))  # MPICH has a tab
    return seen


def hello_source(work: Path) -> Path:
    source = work / "mpi_hello.c"
    source.write_text(resources.files("pipeline.stages.smoke").joinpath("mpi_hello.c").read_text())
    return source


def compile_hello(name: str, sif: Path, ctx: StageContext, work: Path, log: Log,
                  compile_in: Path | None) -> Path | TestResult:
    """The hello world's binary (compiled by an earlier test of the job, or now with the SIF's
    ``mpicc``, else ``compile_in``'s), or the TestResult ``name`` ends with when it cannot be."""
    binary = work / "hello"
    if binary.exists():
        return binary
    source = hello_source(work)
    script = (f"command -v mpicc >/dev/null 2>&1 || exit {NO_MPICC}; "
              f"mpicc -o {binary} {source}")
    tried = []
    for where in (sif, compile_in):
        if where is None:
            continue
        code, output = apptainer_exec(ctx, ["exec", str(where), "sh", "-c", script], where,
                                      log, work)
        if code == NO_MPICC:
            tried.append(where.name)
            continue
        if code:
            return TestResult(name, "failed", f"mpicc in {where.name}: exit {code}: "
                                              f"{tail(output)}")
        if where != sif:
            log(f"{name}: compiled with the mpicc of {where.name} (this image has none)")
        return binary
    return TestResult(name, "skipped", f"no mpicc in {' or '.join(tried)} to compile the MPI "
                      "hello world" + ("" if compile_in else
                                       ", and no base SIF with this MPI was given to compile in"))


def check(job: Job, sif: Path, ctx: StageContext, work: Path, log: Log, *,
          compile_in: Path | None = None) -> TestResult:
    family = mpi_family(job)
    if family is None:
        return TestResult("mpi", "skipped", "no MPI in this image (mpi: none)")
    hello = compile_hello("mpi", sif, ctx, work, log, compile_in)
    if isinstance(hello, TestResult):
        return hello
    # The machine first: the log then shows an arm64 SIF really ran as aarch64 (QEMU).
    script = f"echo \"machine $(uname -m)\" && {mpirun(family, MPI_RANKS)} {hello}"
    code, output = apptainer_exec(ctx, ["exec", str(sif), "sh", "-c", script], sif, log, work)
    seen = ranks_seen(output, MPI_RANKS)
    if code or seen != list(range(MPI_RANKS)):
        return TestResult("mpi", "failed", f"exit {code}, ranks seen {seen}, expected 0..."
                          f"{MPI_RANKS - 1} once each: {tail(output)}")
    return TestResult("mpi", "passed", f"{MPI_RANKS} ranks, each once")
