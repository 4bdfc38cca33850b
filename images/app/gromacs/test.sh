#!/bin/sh
# gromacs runs and is the version its tag says.
set -eu
gmx --version | grep -q "GROMACS version: *${VERSION}"
