#!/bin/sh
# gromacs runs, is the version its tag says, and runs MD of a small water box on 2 MPI
# ranks through the image's MPI (workload/README.md says what the run is).
set -eu
gmx --version | grep -q "GROMACS version: *${VERSION}"
# The tag's version is the Debian package's upstream version.
dpkg-query -W -f '${Version}' gromacs | grep -q "^${VERSION}" \
  || { echo "gromacs is $(dpkg-query -W -f '${Version}' gromacs), not ${VERSION}" >&2; exit 1; }

RANKS=2
STEPS=100  # nsteps in workload/water.mdp

fail() {  # the summary line the pipeline reports, then the end of the output
  echo "workload: gromacs water: FAILED: $*"
  tail -n 20 run.out >&2 || true
  exit 1
}

# Open MPI refuses more ranks than cores without --oversubscribe; MPICH's mpirun has no
# such flag.  Asked of the mpirun on PATH, not of MPI_FAMILY: when it is another MPI's
# launcher the run must show that (ranks running alone), not fail on a flag.
oversubscribe=""
if mpirun --version 2>&1 | grep -q "Open MPI"; then oversubscribe=--oversubscribe; fi
# The SIF is read-only: the run writes in a fresh folder.
cd "$(mktemp -d)"
cp /opt/factory/workload/water.mdp /opt/factory/workload/topol.top .
start=$(date +%s)
# The shipped spc216.gro (216 waters, equilibrated) in its own box, 1.86206 nm, so no
# molecules overlap across the edges; solvate adds them to topol.top.
gmx -quiet solvate -cs spc216.gro -box 1.86206 1.86206 1.86206 -o water.gro -p topol.top > run.out 2>&1 \
  || fail "gmx solvate exit $?"
gmx -quiet grompp -f water.mdp -c water.gro -p topol.top -o water.tpr >> run.out 2>&1 \
  || fail "gmx grompp exit $?"
# gmx_mpi is the MPI build (Debian's gromacs package ships it beside the thread-MPI gmx).
# One OpenMP thread per rank: 2 ranks x N threads would oversubscribe a small runner.
# shellcheck disable=SC2086  # $oversubscribe is one word or none
OMP_NUM_THREADS=1 mpirun $oversubscribe -np "$RANKS" \
  gmx_mpi -quiet mdrun -s water.tpr -deffnm water -ntomp 1 -pin off >> run.out 2>&1 \
  || fail "mpirun gmx_mpi mdrun exit $?"
seconds=$(( $(date +%s) - start ))

# One run of 2 ranks writes one water.log saying so; ranks started by another MPI's
# launcher each run alone ("1 MPI process") and race on the same files.
grep -q "^Using $RANKS MPI processes" water.log \
  || fail "expected 1 run on $RANKS MPI processes, got" \
          "$(grep -h "^Using [0-9]* MPI process" run.out | sort | uniq -c \
             | awk '{ n = $1; $1 = ""; printf "%s%d x%s", sep, n, $0; sep = ", " }')" \
          "(is mpirun another MPI's launcher? then each rank runs alone)"
grep -q "^Finished mdrun" water.log || fail "mdrun did not finish"
# The energy table of step $1: "Step Time", its values, then "Energies (kJ/mol)" and rows
# of names (15 characters each, right-aligned) alternating with rows of their numbers.
energies() {
  awk -v s="$1" '
    /A V E R A G E S/ { exit }
    /^ +Step +Time$/ { getline; here = ($1 == s); next }
    here && /Energies \(kJ\/mol\)/ { on = 1; next }
    on && NF == 0 { exit }
    on { print }' water.log
}
value() {  # the number under the name $2 in the energy table $1
  echo "$1" | awk -v name="$2" '
    NR % 2 == 1 { n = 0; line = $0
                  while (length(line) > 0) {
                    t = substr(line, 1, 15); gsub(/^ +| +$/, "", t); title[++n] = t
                    line = substr(line, 16) }
                  next }
    { for (i = 1; i <= n; i++) if (title[i] == name) { print $i; exit } }'
}
first=$(energies 0)
last=$(energies "$STEPS")
[ -n "$first" ] && [ -n "$last" ] || fail "the log has no energies at step 0 and step $STEPS"
# GROMACS writes a non-finite number as nan or inf.
if echo "$first$last" | grep -qiE "nan|inf"; then fail "non-finite energies"; fi
potential=$(value "$last" Potential)
temperature=$(value "$last" Temperature)
conserved0=$(value "$first" "Conserved En.")
conserved=$(value "$last" "Conserved En.")
molecules=$(awk '$1 == "SOL" { print $2 }' topol.top)
# Physical sense, loosely: the thermostat holds 300 K (one step's temperature of 216
# waters scatters by about 15 K), the energy the thermostat accounts for is conserved, and
# liquid SPC/E water's potential energy is about -46 kJ/mol per molecule here.
summary=$(awk -v p="$potential" -v t="$temperature" -v c0="$conserved0" -v c="$conserved" \
              -v m="$molecules" 'BEGIN {
  drift = (c - c0) / (c0 < 0 ? -c0 : c0); if (drift < 0) drift = -drift
  bad = ""
  if (t < 250 || t > 350) bad = bad sprintf(" temperature %.0f K not 300 +- 50;", t)
  if (drift > 0.01) bad = bad sprintf(" conserved energy drifted %.1f%%;", 100 * drift)
  if (p / m < -55 || p / m > -35) bad = bad sprintf(" potential %.1f kJ/mol per water not -46 +- 10;", p / m)
  printf "%s|%.0f K, potential %.1f kJ/mol per water, conserved-energy drift %.2f%%", bad, t, p / m, 100 * drift
}')
case "$summary" in
  "|"*) ;;
  *) fail "${summary%%|*}" ;;
esac
echo "workload: gromacs water: $RANKS ranks, $molecules SPC/E waters, $STEPS steps," \
     "${summary#*|}, ${seconds} s"
