"""``gpu`` (gpu images): the CUDA smoke program compiled with the image's ``nvcc``, everywhere,
and run with ``--nv`` where a GPU is.

Compiling needs no GPU, so every gpu image proves its toolkit works: a failing ``nvcc``
fails the job (with its output's tail).  Running the kernel needs a GPU (``nvidia-smi``
works) and Apptainer on the host, next to the driver (``--nv`` binds the host's driver
into the container); without either the test passes as "compiled; not run: ..." and says
why it did not run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline.planning.jobs import Job
from pipeline.stages.checks.results import TestResult, apptainer_exec, tail
from pipeline.stages.context import StageContext
from pipeline.tools.processes import Log

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
EXPECTED = "cuda result 1 4 9 16"


def why_not_run(ctx: StageContext) -> str | None:
    """Why the compiled program cannot run here, or None when it can."""
    smi = shutil.which("nvidia-smi")
    if smi is None or subprocess.run([smi], capture_output=True, check=False).returncode:
        return "no GPU (nvidia-smi missing or failing)"
    if ctx.apptainer.kind != "host":
        return ("no host Apptainer: --nv needs Apptainer on the host, next to the driver; the "
                "lab runs it in a container")
    return None


def check(job: Job, sif: Path, ctx: StageContext, work: Path, log: Log) -> TestResult:
    source, binary = work / "square.cu", work / "square"
    source.write_text(CUDA_PROGRAM)
    code, output = apptainer_exec(ctx, ["exec", str(sif), "nvcc", "-o", str(binary),
                                        str(source)], sif, log, work)
    if code:
        return TestResult("gpu", "failed", f"nvcc could not compile the CUDA smoke program: "
                          f"exit {code}: {tail(output)}")
    why_not = why_not_run(ctx)
    if why_not is not None:
        return TestResult("gpu", "passed", f"compiled; not run: {why_not}")
    script = f"nvidia-smi && {binary}"
    code, output = apptainer_exec(ctx, ["exec", "--nv", str(sif), "sh", "-c", script],
                                  sif, log, work)
    if code or EXPECTED not in output:
        return TestResult("gpu", "failed", f"exit {code}: {tail(output)}")
    return TestResult("gpu", "passed", "compiled; nvidia-smi and the CUDA kernel ran")
