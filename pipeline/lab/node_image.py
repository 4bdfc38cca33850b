"""The lab's "cluster node": the lab's Apptainer image plus host MPIs, for mpi-hybrid.

On a cluster the hybrid model is the node's ``mpirun`` starting ranks that each run
``apptainer exec SIF program``.  The lab has no host Apptainer, so it makes a node image:

* a separate image built FROM the Apptainer image (not more packages in that image): the
  runtime that converts every SIF stays as it is, so adding or changing the node's MPIs
  never rebuilds the runtime nor changes the image conversions run in, and the node costs
  one ``apt-get install`` layer on top (about a minute, once);
* ``openmpi-bin`` and ``mpich`` side by side, as clusters offer several MPIs (modules).
  Open MPI comes from Debian 13 (trixie, 5.0), not sid: sid has moved on to Open MPI 6
  release candidates, which cannot launch any Open MPI cell of the catalogue (4.1, 5.0),
  and a cluster node runs a stable release.  MPICH comes from sid (the newest, so it can
  launch every MPICH-ABI cell).  Debian's alternatives install them as
  ``/usr/bin/mpirun.openmpi`` and
  ``/usr/bin/mpirun.mpich`` (plus aliases such as ``mpirun.mpi_abi_mpich``, dropped here
  when they are the same program).

What each ``mpirun`` says of itself (``--version``) and which ``libmpi*.so.*`` its
installation ships are recorded once, here, next to the image (``node-image.json``); the
test stage reads and interprets them (``pipeline/stages/mpi_compat.py``) instead of
asking the node again for every job.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

from pipeline.tools import apptainer
from pipeline.tools.apptainer import Node, NodeMpi
from pipeline.tools.docker_engine import BuildClient
from pipeline.tools.processes import Log, run_logged

# (package, Debian suite it comes from): the key of the node image.
PACKAGES = (("openmpi-bin", "trixie"), ("mpich", "sid"))
STABLE_SOURCE = "deb http://deb.debian.org/debian trixie main"
FACTS_TIMEOUT = 120
MPIRUN_LINE = "=== factory-node mpirun "  # followed by its path
LIBRARIES_LINE = "=== factory-node libraries"

# Per mpirun.* (aliases of one program once): its path, --version, then its installation's
# MPI library files.  The lab only collects; the test stage decides what they mean.
FACTS_SCRIPT = r"""
seen=""
for m in $(ls /usr/bin/mpirun.* | awk '{ print length, $0 }' | sort -n | cut -d' ' -f2-); do
  real=$(readlink -f "$m")
  case " $seen " in *" $real "*) continue ;; esac
  seen="$seen $real"
  prefix=$(dirname "$(dirname "$real")")
  echo "%(mpirun)s$m"
  "$m" --version 2>&1 | head -n 20
  echo "%(libraries)s"
  ls "$prefix"/lib*/libmpi*.so.* "$prefix"/lib*/*/libmpi*.so.* 2>/dev/null | xargs -rn1 basename
done
""" % {"mpirun": MPIRUN_LINE, "libraries": LIBRARIES_LINE}


def image_name(runtime_image: str) -> str:
    """``factory/node:<key>``: changes with the runtime image it is built on and the MPIs."""
    packages = ",".join(f"{name}/{suite}" for name, suite in PACKAGES)
    key = hashlib.sha256(f"{runtime_image}|{packages}|{STABLE_SOURCE}".encode()).hexdigest()[:12]
    return f"factory/node:{key}"


def ensure(lab_dir: Path, client: BuildClient, runtime: apptainer.Apptainer,
           log: Log) -> Node:
    """The node for ``runtime`` (the lab's Apptainer image): reused when recorded and present,
    else built, its MPIs detected and recorded."""
    wanted = image_name(runtime.image)
    found = apptainer.find_node(lab_dir, client.path)
    if found is not None and found.image == wanted:
        return found
    # -t trixie: the named package and the dependencies it lacks come from trixie; what sid
    # already installed newer (glibc, ...) is never downgraded.
    installs = " \\\n".join(
        f" && apt-get install -y --no-install-recommends -t {suite} {name}"
        for name, suite in PACKAGES)
    dockerfile = (f"FROM {runtime.image}\n"
                  f"RUN echo '{STABLE_SOURCE}' > /etc/apt/sources.list.d/trixie.list \\\n"
                  " && apt-get -o Acquire::Check-Valid-Until=false update \\\n"
                  f"{installs} \\\n"
                  " && rm -rf /var/lib/apt/lists/*\n")
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(dockerfile)
        run_logged([*client.build_argv(), "--network", "host", "-t", wanted, context], log,
                   env=client.env())
    done = subprocess.run([client.path, "run", "--rm", wanted, "sh", "-c", FACTS_SCRIPT],
                          capture_output=True, text=True, check=True, timeout=FACTS_TIMEOUT)
    node = Node(wanted, parse_facts(done.stdout))
    apptainer.node_marker(lab_dir).write_text(json.dumps(node.to_json(), indent=2) + "\n")
    return node


def parse_facts(output: str) -> tuple:
    """The NodeMpi of each ``mpirun`` in FACTS_SCRIPT's output."""
    mpis = []
    for block in output.split(MPIRUN_LINE)[1:]:
        head, _, libraries = block.partition(LIBRARIES_LINE)
        mpirun, _, version = head.partition("\n")
        mpis.append(NodeMpi(mpirun.strip(), version.strip(), tuple(libraries.split())))
    return tuple(mpis)
