#!/bin/sh
# openfoam runs and is the version its tag says.
set -eu
test -d /usr/share/openfoam
# The tag's version is the Debian package's upstream version.
dpkg-query -W -f '${Version}' openfoam | grep -q "^${VERSION}" \
  || { echo "openfoam is $(dpkg-query -W -f '${Version}' openfoam), not ${VERSION}" >&2; exit 1; }
