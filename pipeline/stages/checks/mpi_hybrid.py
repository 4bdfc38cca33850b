"""``mpi-hybrid``: a host MPI's ``mpirun`` launching ``apptainer exec`` ranks, the way cluster
users run containers.

The host is the machine itself with a host Apptainer, else the lab's cluster node (its
Apptainer image plus Debian's Open MPI and MPICH; ``pipeline/lab/node_image.py``).  Of the
host's MPIs the one that can launch the container's is chosen (``mpi_compat.choose``: Open
MPI same major version, MPICH ABI family not older); with none the test is skipped with the
reason.  It passes only when ranks 0..N-1 each answer once *with the container's MPI
library*: the hello world prints ``MPI_Get_library_version``'s first line, which every rank
must report as the same binary does run alone (a singleton) inside the SIF.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.stages.checks.mpi import (
    MPI_RANKS,
    compile_hello,
    libraries_seen,
    mpi_family,
    ranks_seen,
)
from pipeline.stages.checks.results import TestResult, apptainer_exec, tail
from pipeline.stages.context import StageContext
from pipeline.stages.mpi_compat import HostMpi, HostMpiMissing, choose, host_mpis
from pipeline.tools.apptainer import with_binds
from pipeline.tools.processes import Log, run_captured


def host_for(job: Job, ctx: StageContext, log: Log) -> tuple[HostMpi | None, str]:
    """The host MPI that can launch the container's, or (None, why the test is skipped)."""
    family = mpi_family(job)
    if family is None:
        return None, "no MPI in this image (mpi: none)"
    try:
        hosts = host_mpis(ctx.apptainer)
    except HostMpiMissing as err:
        return None, str(err)
    for host in hosts:
        log(f"host MPI: {host.describe()}")
    host, why = choose(family, str(job.variables.get("mpi_version", "")), hosts)
    log(f"mpi-hybrid: {why}")
    return host, why


def check(job: Job, sif: Path, ctx: StageContext, work: Path, log: Log, *,
          compile_in: Path | None = None) -> TestResult:
    host, why_not = host_for(job, ctx, log)
    if host is None:
        return TestResult("mpi-hybrid", "skipped", why_not)
    tested_with = f"host {host.describe()}"
    hello = compile_hello("mpi-hybrid", sif, ctx, work, log, compile_in)
    if isinstance(hello, TestResult):
        return hello
    code, output = apptainer_exec(ctx, ["exec", str(sif), str(hello)], sif, log, work)
    alone = libraries_seen(output, 1).get(0, [])
    if code or len(alone) != 1:
        return TestResult("mpi-hybrid", "failed", "the hello world alone in the SIF (a "
                          f"singleton) did not report its MPI library: exit {code}: "
                          f"{tail(output)}")
    library = alone[0]
    exec_ranks = with_binds(["exec", *share_namespace(ctx.apptainer), str(sif), str(hello)],
                            [work], (sif.parent,))
    argv = ctx.apptainer.node_argv(
        [host.mpirun, *host_mpirun_flags(host.family, as_root=ctx.apptainer.kind == "host"
                                         and os.geteuid() == 0),
         "-np", str(MPI_RANKS), ctx.apptainer.command, *exec_ranks], [work], (sif.parent,))
    log("$ " + " ".join(argv))
    done = run_captured(argv)
    log(done.stdout + done.stderr)
    return verdict(tested_with, done.returncode, done.stdout, done.stderr, library)


def verdict(tested_with: str, code: int, stdout: str, stderr: str,
            library: str) -> TestResult:
    """Passed only when ranks 0..N-1 each answered once, each with ``library``."""
    seen = ranks_seen(stdout, MPI_RANKS)
    if code or seen != list(range(MPI_RANKS)):
        return TestResult("mpi-hybrid", "failed", f"{tested_with}: exit {code}, "
                          f"ranks seen {seen}: {tail(stdout + stderr)}")
    loaded = libraries_seen(stdout, MPI_RANKS)
    wrong = {r: libs for r, libs in sorted(loaded.items()) if libs != [library]}
    if wrong or sorted(loaded) != seen:
        return TestResult("mpi-hybrid", "failed", f"{tested_with}: not every rank loaded the "
                          f"container's MPI library ({library}): {wrong or loaded}")
    return TestResult("mpi-hybrid", "passed", f"{tested_with}, {MPI_RANKS} ranks, each with "
                      f"the container's MPI library ({library})")


def share_namespace(runtime) -> list[str]:
    """``--sharens`` where the runtime has it (Apptainer 1.1 on, made for mpirun): the ranks
    then share one user namespace.  An unprivileged exec otherwise gives each rank its own,
    and the MPI's shared memory between them fails (UCX opens /proc/<pid>/fd/<n> of another
    rank: permission denied).  Singularity and older Apptainers run without it."""
    found = re.search(r"(\d+)\.(\d+)", runtime.version or "")
    new_enough = found is not None and (int(found[1]), int(found[2])) >= (1, 1)
    return ["--sharens"] if Path(runtime.command).name == "apptainer" and new_enough else []


def host_mpirun_flags(host_family: str | None, *, as_root: bool = False) -> list[str]:
    """Open MPI refuses root without --allow-run-as-root and more ranks than cores without
    --oversubscribe; MPICH's hydra has neither flag."""
    if host_family != "openmpi":
        return []
    return ["--oversubscribe"] + (["--allow-run-as-root"] if as_root else [])
