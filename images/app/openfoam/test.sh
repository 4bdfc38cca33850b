#!/bin/sh
# openfoam runs, is the version its tag says, and solves the lid-driven cavity on 2 MPI
# ranks through the image's MPI (workload/README.md says what the run is).
set -eu
test -d /usr/share/openfoam
# The tag's version is the Debian package's upstream version.
dpkg-query -W -f '${Version}' openfoam | grep -q "^${VERSION}" \
  || { echo "openfoam is $(dpkg-query -W -f '${Version}' openfoam), not ${VERSION}" >&2; exit 1; }

RANKS=2
END_TIME=0.25  # endTime in workload/cavity/system/controlDict

fail() {  # the summary line the pipeline reports, then the end of the output
  echo "workload: openfoam cavity: FAILED: $*"
  tail -n 20 "${log:-blockMesh.log}" >&2 || true
  exit 1
}

# Open MPI refuses more ranks than cores without --oversubscribe; MPICH's mpirun has no
# such flag.  Asked of the mpirun on PATH, not of MPI_FAMILY: when it is another MPI's
# launcher the run must show that, not fail on a flag.
oversubscribe=""
if mpirun --version 2>&1 | grep -q "Open MPI"; then oversubscribe=--oversubscribe; fi
# Debian's OpenFOAM finds its etc/ files (controlDict, cellModels, ...) through
# WM_PROJECT_DIR, which its etc/bashrc would set (and that needs bash); mpirun passes the
# environment on to the ranks.
export WM_PROJECT_DIR=/usr/share/openfoam
# The SIF is read-only: the case is run in a copy, in a fresh folder.
cd "$(mktemp -d)"
cp -r /opt/factory/workload/cavity .
cd cavity
start=$(date +%s)
log=blockMesh.log;    blockMesh > "$log" 2>&1 || fail "blockMesh exit $?"
log=decomposePar.log; decomposePar > "$log" 2>&1 || fail "decomposePar exit $?"
log=icoFoam.log
# shellcheck disable=SC2086  # $oversubscribe is one word or none
mpirun $oversubscribe -np "$RANKS" icoFoam -parallel > "$log" 2>&1 \
  || fail "mpirun icoFoam -parallel exit $?"
seconds=$(( $(date +%s) - start ))

# The header names the number of processes of the one parallel run.
grep -q "^nProcs *: *$RANKS\$" "$log" \
  || fail "expected nProcs $RANKS, the log says: $(grep -h "^nProcs" "$log" | paste -sd, -)"
# It ran to the end time and ended normally.
grep -q "^Time = $END_TIME\$" "$log" || fail "the run did not reach Time = $END_TIME"
tail -n 5 "$log" | grep -q "^End" || fail "icoFoam did not end"
# The initial residual of Ux at the first and the last time step: the flow settles, so
# the last is far smaller.
residuals=$(sed -n 's/.*Solving for Ux, Initial residual = \([^,]*\),.*/\1/p' "$log")
[ -n "$residuals" ] || fail "no Ux residuals in the log"
first=$(echo "$residuals" | head -n 1)
last=$(echo "$residuals" | tail -n 1)
steps=$(echo "$residuals" | wc -l)
awk -v f="$first" -v l="$last" 'BEGIN { exit !(l == l + 0 && f == f + 0 && l < f / 100) }' \
  || fail "the Ux residual did not fall 100-fold: $first at the first step, $last at the last"
echo "workload: openfoam cavity: $RANKS ranks, $steps steps to t = $END_TIME," \
     "Ux residual $first -> $last, ${seconds} s"
