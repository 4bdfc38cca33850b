#!/bin/sh
# openfoam runs and is the version its tag says.
set -eu
test -d /usr/share/openfoam
