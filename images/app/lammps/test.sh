#!/bin/sh
# lammps runs, is the version its tag says, and computes a Lennard-Jones melt on 2 MPI
# ranks through the image's MPI (workload/README.md says what the run is and where its
# reference comes from).
set -eu
lmp -h | grep -q "Large-scale Atomic/Molecular Massively Parallel Simulator"
# The tag's version is the Debian package's upstream version.
dpkg-query -W -f '${Version}' lammps | grep -q "^${VERSION}" \
  || { echo "lammps is $(dpkg-query -W -f '${Version}' lammps), not ${VERSION}" >&2; exit 1; }

# The final total energy (LJ units) of in.melt and how far a run may be from it.  The run
# is at constant energy, so this barely moves with the arch, compiler or rank count while
# the trajectory itself does (measured: -2.2812 amd64, -2.2816 arm64).
REFERENCE=-2.281
TOLERANCE=0.01
RANKS=2

fail() {  # the summary line the pipeline reports, then the end of the run's output
  echo "workload: lammps melt: FAILED: $*"
  tail -n 20 melt.out >&2 || true
  exit 1
}

# Open MPI refuses more ranks than cores without --oversubscribe; MPICH's mpirun has no
# such flag.  Asked of the mpirun on PATH, not of MPI_FAMILY: when it is another MPI's
# launcher the run must show that (ranks running alone), not fail on a flag.
oversubscribe=""
if mpirun --version 2>&1 | grep -q "Open MPI"; then oversubscribe=--oversubscribe; fi
# The SIF is read-only: LAMMPS writes its log in a fresh folder.
cd "$(mktemp -d)"
start=$(date +%s)
# shellcheck disable=SC2086  # $oversubscribe is one word or none
mpirun $oversubscribe -np "$RANKS" lmp -in /opt/factory/workload/in.melt -log melt.log \
  > melt.out 2>&1 || fail "mpirun exit $?"
seconds=$(( $(date +%s) - start ))

# "Loop time of T on N procs for S steps": one line from one N-rank run.  An mpirun of
# another MPI starts N separate 1-rank LAMMPS instead: N lines "on 1 procs".
loops=$(grep "^Loop time of" melt.out || true)
[ -n "$loops" ] || fail "the run did not finish (no 'Loop time')"
runs=$(echo "$loops" | wc -l)
procs=$(echo "$loops" | sed -n 's/.* on \([0-9]*\) procs .*/\1/p' | sort -u | paste -sd/ -)
[ "$runs" -eq 1 ] && [ "$procs" = "$RANKS" ] \
  || fail "expected 1 run on $RANKS procs, got $runs run(s) on $procs procs" \
          "(is mpirun another MPI's launcher? then each rank runs alone)"
# The thermo line of the last step: step temp pe ke etotal press.
energy=$(awk '$1 == "250" && NF == 6 { e = $5 } END { print e }' melt.out)
[ -n "$energy" ] || fail "no energy at step 250"
awk -v e="$energy" -v r="$REFERENCE" -v t="$TOLERANCE" \
  'BEGIN { d = e - r; if (d < 0) d = -d; exit !(d <= t) }' \
  || fail "energy $energy, not within $TOLERANCE of $REFERENCE"
echo "workload: lammps melt: $RANKS ranks, 250 steps, energy $energy (ref $REFERENCE +- $TOLERANCE), ${seconds} s"
