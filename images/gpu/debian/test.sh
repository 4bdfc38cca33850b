#!/bin/sh
# nvcc is the cell's CUDA version; running a kernel needs a GPU and is the GPU smoke test's job.
set -eu
nvcc --version | grep -q "release ${CUDA}" || { echo "nvcc is not CUDA ${CUDA}" >&2; exit 1; }
