#!/bin/sh
# gromacs runs and is the version its tag says.
set -eu
gmx --version | grep -q "GROMACS version: *${VERSION}"
# The tag's version is the Debian package's upstream version.
dpkg-query -W -f '${Version}' gromacs | grep -q "^${VERSION}" \
  || { echo "gromacs is $(dpkg-query -W -f '${Version}' gromacs), not ${VERSION}" >&2; exit 1; }
