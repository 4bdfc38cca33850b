"""``gpu`` (gpu images): ``--nv`` with ``nvidia-smi`` and a small CUDA program, where a GPU is."""

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


def check(job: Job, sif: Path, ctx: StageContext, work: Path, log: Log) -> TestResult:
    smi = shutil.which("nvidia-smi")
    if smi is None or subprocess.run([smi], capture_output=True, check=False).returncode:
        return TestResult("gpu", "skipped", "no GPU on this host (nvidia-smi missing or failing)")
    if ctx.apptainer.kind != "host":
        return TestResult("gpu", "skipped", "--nv needs Apptainer on the host, next to the "
                          "driver; the lab runs it in a container")
    (work / "square.cu").write_text(CUDA_PROGRAM)
    script = f"nvidia-smi && nvcc -o {work}/square {work}/square.cu && {work}/square"
    code, output = apptainer_exec(ctx, ["exec", "--nv", str(sif), "sh", "-c", script],
                                  sif, log, work)
    if code or "cuda result 1 4 9 16" not in output:
        return TestResult("gpu", "failed", f"exit {code}: {tail(output)}")
    return TestResult("gpu", "passed", "nvidia-smi and a CUDA kernel ran")
