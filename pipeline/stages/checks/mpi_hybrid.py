"""``mpi-hybrid``: the host's ``mpirun`` (``PIPELINE_HOST_MPI`` or ``mpirun`` on PATH)
launching ``apptainer exec``; needs both on the host, and an MPI there that can launch the
container's (``mpi_compat.compatible``: Open MPI same major version, MPICH ABI family not
older), otherwise skipped with the reason."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.stages.checks.mpi import MPI_RANKS, hello_source, mpi_family, ranks_seen
from pipeline.stages.checks.results import TestResult, apptainer_exec, tail
from pipeline.stages.context import StageContext
from pipeline.stages.mpi_compat import HostMpi, HostMpiMissing, compatible, detect_host_mpi
from pipeline.tools.processes import Log, run_captured


def host_for(job: Job, ctx: StageContext, log: Log) -> tuple[HostMpi | None, str]:
    """The host MPI that can launch the container's, or (None, why the test is skipped)."""
    family = mpi_family(job)
    if family is None:
        return None, "no MPI in this image (mpi: none)"
    if ctx.apptainer.kind != "host":
        return None, ("the host has no Apptainer (the lab runs it in a container), so the "
                      "host's mpirun cannot launch it")
    try:
        host = detect_host_mpi()
    except HostMpiMissing as err:
        return None, str(err)
    log(f"host MPI: {host.describe()}")
    ok, why = compatible(family, str(job.variables.get("mpi_version", "")), host.family,
                         host.version, host.soname)
    log(f"mpi-hybrid: {why}")
    return (host if ok else None), why


def check(job: Job, sif: Path, ctx: StageContext, work: Path, log: Log) -> TestResult:
    host, why_not = host_for(job, ctx, log)
    if host is None:
        return TestResult("mpi-hybrid", "skipped", why_not)
    tested_with = f"host {host.describe()}"
    source = hello_source(work)
    code, output = apptainer_exec(ctx, ["exec", str(sif), "mpicc", "-o", f"{work}/hello",
                                        str(source)], sif, log, work)
    if code:
        return TestResult("mpi-hybrid", "failed", f"mpicc in the container: {tail(output)}")
    argv = [host.mpirun, *host_mpirun_flags(host.family), "-np", str(MPI_RANKS),
            ctx.apptainer.command, "exec", "--bind", str(work), str(sif), f"{work}/hello"]
    log("$ " + " ".join(argv))
    done = run_captured(argv)
    log(done.stdout + done.stderr)
    seen = ranks_seen(done.stdout, MPI_RANKS)
    if done.returncode or seen != list(range(MPI_RANKS)):
        return TestResult("mpi-hybrid", "failed", f"{tested_with}: exit {done.returncode}, "
                          f"ranks seen {seen}: {tail(done.stdout + done.stderr)}")
    return TestResult("mpi-hybrid", "passed", f"{tested_with}, {MPI_RANKS} ranks")


def host_mpirun_flags(host_family: str | None) -> list[str]:
    """Open MPI refuses root without --allow-run-as-root and more ranks than cores without
    --oversubscribe; MPICH's hydra has neither flag."""
    if host_family != "openmpi":
        return []
    return ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
