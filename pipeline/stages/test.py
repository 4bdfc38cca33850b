"""Test stage: a SIF proves it works before anything of it is published.

Tests, each reported as passed, failed or skipped with its reason (never passed when it
did not run):

* ``%test``: ``apptainer test`` on the SIF, unprivileged;
* ``mpi``: the pipeline's MPI hello world compiled with the container's ``mpicc`` and run
  on N ranks with its ``mpirun``; passes only when ranks 0..N-1 each answer once;
* ``mpi-hybrid``: the host's ``mpirun`` (``PIPELINE_HOST_MPI`` or ``mpirun`` on PATH)
  launching ``apptainer exec``; needs both on the host, and an MPI there that can launch
  the container's (``mpi_compat.compatible``: Open MPI same major version, MPICH ABI family
  not older), otherwise skipped with the reason;
* ``gpu`` (gpu images): ``--nv`` with ``nvidia-smi`` and a small CUDA program, where a GPU is.

Any failed test fails the job.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.stages.context import StageContext
from pipeline.stages.mpi_compat import HostMpi, HostMpiMissing, compatible, detect_host_mpi
from pipeline.tools.processes import Log, run_captured

MPI_RANKS = 4
TAIL = 12
CUDA_PROGRAM = r"""
#include <cstdio>
__global__ void square(int *x) { x[threadIdx.x] *= x[threadIdx.x]; }
int main() {
    int h[4] = {1, 2, 3, 4}, *d;
    cudaMalloc(&d, sizeof h); cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice);
    square<<<1, 4>>>(d); cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    printf("cuda result %d %d %d %d\n", h[0], h[1], h[2], h[3]);
    return !(h[3] == 16);
}
"""


class TestsFailed(RuntimeError):
    """At least one test failed; the message names them and shows their last output."""


@dataclass(frozen=True)
class TestResult:
    name: str
    result: str  # passed | failed | skipped
    reason: str

    def to_json(self) -> dict:
        return {"name": self.name, "result": self.result, "reason": self.reason}


def run_tests(job: Job, sif: Path, ctx: StageContext, log: Log) -> list[TestResult]:
    """Every test of the job; raises TestsFailed (with the results) when one failed."""
    work = ctx.scratch / f"test-{sif.stem}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o777)  # the unprivileged user writes its binaries here
    try:
        results = [_percent_test(job, sif, ctx, log), _mpi(job, sif, ctx, work, log),
                   _mpi_hybrid(job, sif, ctx, work, log)]
        if job.kind == "gpu":
            results.append(_gpu(sif, ctx, work, log))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in results:
        log(f"test {r.name}: {r.result}" + (f" ({r.reason})" if r.reason else ""))
    return results


def _exec(ctx: StageContext, args: list, sif: Path, log: Log, work: Path | None = None
          ) -> tuple[int, str]:
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


def _tail(output: str) -> str:
    lines = [line for line in output.splitlines() if not line.startswith("INFO:")]
    return " | ".join(lines[-TAIL:])


def _percent_test(job: Job, sif: Path, ctx: StageContext, log: Log) -> TestResult:
    if not (ctx.catalogue_dir / job.recipe / "test.sh").exists():
        return TestResult("%test", "skipped", f"the recipe {job.recipe} has no test.sh")
    code, output = _exec(ctx, ["test", str(sif)], sif, log)
    if code:
        return TestResult("%test", "failed", f"exit {code}: {_tail(output)}")
    return TestResult("%test", "passed", "")


def _mpi_family(job: Job) -> str | None:
    family = job.variables.get("mpi_family", "none")
    return None if family in ("none", "") else family


def _mpirun(family: str, ranks: int) -> str:
    # Open MPI refuses more ranks than cores without --oversubscribe; MPICH's hydra has no
    # such flag and refuses it.
    return f"mpirun --oversubscribe -np {ranks}" if family == "openmpi" else f"mpirun -np {ranks}"


def ranks_seen(output: str, ranks: int) -> list[int]:
    return sorted(int(r) for r in re.findall(rf"hello from rank (\d+) of {ranks}\b", output))


def _hello_source(work: Path) -> Path:
    source = work / "mpi_hello.c"
    source.write_text(resources.files("pipeline.stages.smoke").joinpath("mpi_hello.c").read_text())
    return source


def _mpi(job: Job, sif: Path, ctx: StageContext, work: Path, log: Log) -> TestResult:
    family = _mpi_family(job)
    if family is None:
        return TestResult("mpi", "skipped", "no MPI in this image (mpi: none)")
    source = _hello_source(work)
    # The machine first: the log then shows an arm64 SIF really ran as aarch64 (QEMU).
    script = (f"echo \"machine $(uname -m)\" && mpicc -o {work}/hello {source} && "
              f"{_mpirun(family, MPI_RANKS)} {work}/hello")
    code, output = _exec(ctx, ["exec", str(sif), "sh", "-c", script], sif, log, work)
    seen = ranks_seen(output, MPI_RANKS)
    if code or seen != list(range(MPI_RANKS)):
        return TestResult("mpi", "failed", f"exit {code}, ranks seen {seen}, expected 0..."
                          f"{MPI_RANKS - 1} once each: {_tail(output)}")
    return TestResult("mpi", "passed", f"{MPI_RANKS} ranks, each once")


def _hybrid_host(job: Job, ctx: StageContext, log: Log) -> tuple[HostMpi | None, str]:
    """The host MPI that can launch the container's, or (None, why the test is skipped)."""
    family = _mpi_family(job)
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


def _mpi_hybrid(job: Job, sif: Path, ctx: StageContext, work: Path, log: Log) -> TestResult:
    host, why_not = _hybrid_host(job, ctx, log)
    if host is None:
        return TestResult("mpi-hybrid", "skipped", why_not)
    tested_with = f"host {host.describe()}"
    source = _hello_source(work)
    code, output = _exec(ctx, ["exec", str(sif), "mpicc", "-o", f"{work}/hello", str(source)],
                         sif, log, work)
    if code:
        return TestResult("mpi-hybrid", "failed", f"mpicc in the container: {_tail(output)}")
    argv = [host.mpirun, *_host_mpirun_flags(host.family), "-np", str(MPI_RANKS),
            ctx.apptainer.command, "exec", "--bind", str(work), str(sif), f"{work}/hello"]
    log("$ " + " ".join(argv))
    done = run_captured(argv)
    log(done.stdout + done.stderr)
    seen = ranks_seen(done.stdout, MPI_RANKS)
    if done.returncode or seen != list(range(MPI_RANKS)):
        return TestResult("mpi-hybrid", "failed", f"{tested_with}: exit {done.returncode}, "
                          f"ranks seen {seen}: {_tail(done.stdout + done.stderr)}")
    return TestResult("mpi-hybrid", "passed", f"{tested_with}, {MPI_RANKS} ranks")


def _host_mpirun_flags(host_family: str | None) -> list[str]:
    """Open MPI refuses root without --allow-run-as-root and more ranks than cores without
    --oversubscribe; MPICH's hydra has neither flag."""
    if host_family != "openmpi":
        return []
    return ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])


def _gpu(sif: Path, ctx: StageContext, work: Path, log: Log) -> TestResult:
    smi = shutil.which("nvidia-smi")
    if smi is None or subprocess.run([smi], capture_output=True, check=False).returncode:
        return TestResult("gpu", "skipped", "no GPU on this host (nvidia-smi missing or failing)")
    if ctx.apptainer.kind != "host":
        return TestResult("gpu", "skipped", "--nv needs Apptainer on the host, next to the "
                          "driver; the lab runs it in a container")
    (work / "square.cu").write_text(CUDA_PROGRAM)
    script = f"nvidia-smi && nvcc -o {work}/square {work}/square.cu && {work}/square"
    code, output = _exec(ctx, ["exec", "--nv", str(sif), "sh", "-c", script],
                         sif, log, work)
    if code or "cuda result 1 4 9 16" not in output:
        return TestResult("gpu", "failed", f"exit {code}: {_tail(output)}")
    return TestResult("gpu", "passed", "nvidia-smi and a CUDA kernel ran")
