#!/bin/sh
# The cell's promises: GCC ${GCC} and the cell's MPI family and version.
set -eu
gcc --version | head -n1 | grep -q " ${GCC}\." || { echo "gcc is not GCC ${GCC}" >&2; exit 1; }
case "${MPI_FAMILY}" in
  openmpi) mpirun --version | grep -q "Open MPI) ${MPI_VERSION}" ;;
  mpich)   mpichversion | grep -Eq "Version:[[:space:]]*${MPI_VERSION}" ;;
  none)    ! command -v mpicc ;;
esac
