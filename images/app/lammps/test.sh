#!/bin/sh
# lammps runs and is the version its tag says.
set -eu
lmp -h | grep -q "Large-scale Atomic/Molecular Massively Parallel Simulator"
# The tag's version is the Debian package's upstream version.
dpkg-query -W -f '${Version}' lammps | grep -q "^${VERSION}" \
  || { echo "lammps is $(dpkg-query -W -f '${Version}' lammps), not ${VERSION}" >&2; exit 1; }
