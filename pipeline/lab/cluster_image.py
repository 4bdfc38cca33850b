"""The lab's one-node Slurm cluster, as an image: the cluster node image plus Slurm and Lmod.

The downstream clusters of the users' documents run jobs such as
``srun --mpi=pmix -n 4 apptainer exec app.sif ...`` on offline compute nodes that ``module
load`` software from a shared filesystem.  ``lab up --with cluster`` makes that cluster
(``pipeline/lab/slurm.py`` runs it) from an image built here:

* FROM the lab's node image (``node_image.py``: Apptainer, Open MPI 5 and MPICH), so the
  cluster is a node of the same kind the mpi-hybrid test uses, plus one ``apt-get install``
  layer;
* Slurm from Debian 13 (trixie, 24.11): its ``slurm-wlm-basic-plugins`` has the PMIx plugin
  (``mpi_pmix_v5``, linked to the same libpmix 5 as the node's Open MPI 5) next to
  ``mpi_pmi2``.  Sid's Slurm (26.05) ships ``mpi_pmi2`` only: no ``srun --mpi=pmix`` at all,
  which is what Open MPI 4.1/5 inside a SIF need.  Only the Slurm packages are pinned to
  trixie (``name/trixie``); their other dependencies are sid's, as in the node, since
  ``-t trixie`` would try to downgrade what sid installed (perl) and fail;
* ``munge`` (Slurm's authentication) and ``lmod`` (``module load`` in job scripts; its
  init is in ``/etc/profile.d``, so login shells have ``module``) from sid, like the node;
* the node's unprivileged user (uid 1000) replaced by ``hpc``, with bash: the user jobs are
  submitted as.  uid 1000 is what runs SIFs unprivileged in every lab container;
* ``slurm.conf`` for one node ``node1`` with 4 CPUs (more than this host may have:
  ``SlurmdParameters=config_overrides`` lets slurmd oversubscribe), no cgroups
  (``proctrack/linuxproc``, ``task/none``: a container cannot delegate them), no
  accounting, and the entrypoint that starts munged, slurmctld and slurmd.  Both files are
  baked in (and in the key); the munge key is not: the entrypoint makes a new one at every
  start, so no two clusters share one.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from pipeline.tools.docker_engine import BuildClient
from pipeline.tools.processes import Log, run_logged

# (package, Debian suite it comes from, "" for the node's default: sid).
PACKAGES = (("slurm-wlm", "trixie"), ("slurmctld", "trixie"), ("slurmd", "trixie"),
            ("slurm-client", "trixie"), ("slurm-wlm-basic-plugins", "trixie"),
            ("libslurm42t64", "trixie"), ("munge", ""), ("lmod", ""))
USER = "hpc"
UID = 1000
NODE = "node1"  # the node's name and the container's hostname
PARTITION = "lab"
CPUS = 4
ENTRYPOINT = "/usr/local/sbin/factory-cluster-start"
LOGS = "/var/log/slurm"

SLURM_CONF = f"""\
# The lab's one-node cluster (pipeline/lab/cluster_image.py).
ClusterName=lab
SlurmctldHost={NODE}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile={LOGS}/slurmctld.log
SlurmdLogFile={LOGS}/slurmd.log
# No cgroups in a container: processes are tracked by /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# {CPUS} CPUs whatever the host has: the tests' 4 ranks fit on a 2-core machine.
SlurmdParameters=config_overrides
ReturnToService=2
# Finished jobs stay visible to scontrol for an hour (there is no accounting database).
MinJobAge=3600
MpiDefault=none
# The container has no network but loopback, and Slurm resolves its addresses with
# AI_ADDRCONFIG: glibc (2.43) then finds nothing for AF_INET alone, but does for AF_UNSPEC,
# which Slurm asks for when IPv6 is enabled too.
CommunicationParameters=EnableIPv6
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={CPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""

# Runs as root (PID 1 is docker's init); the container's command prepares FUSE first.
START_SCRIPT = f"""\
#!/bin/sh
set -eu
# A munge key of this start only.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
mungekey --create --force --keyfile /etc/munge/munge.key
chown munge:munge /etc/munge/munge.key
runuser -u munge -- munged
install -d -o slurm -g slurm /run/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd {LOGS}
slurmctld
slurmd
exec tail -F {LOGS}/slurmctld.log {LOGS}/slurmd.log
"""

DOCKERFILE = """\
FROM {node}
RUN apt-get -o Acquire::Check-Valid-Until=false update \\
 && apt-get install -y --no-install-recommends {packages} \\
 && rm -rf /var/lib/apt/lists/* /etc/munge/munge.key \\
 && sed -i '/^[^:]*:x:{uid}:/d' /etc/passwd /etc/group \\
 && rm -rf /home/* \\
 && useradd --uid {uid} --user-group --create-home --shell /bin/bash {user}
COPY slurm.conf /etc/slurm/slurm.conf
COPY start {entrypoint}
RUN chmod 0755 {entrypoint}
"""


def dockerfile(node_image: str) -> str:
    packages = " ".join(f"{name}/{suite}" if suite else name for name, suite in PACKAGES)
    return DOCKERFILE.format(node=node_image, packages=packages, uid=UID, user=USER,
                             entrypoint=ENTRYPOINT)


def image_name(node_image: str) -> str:
    """``factory/cluster:<key>``: changes with the node image and with what goes on top."""
    text = "\0".join((dockerfile(node_image), SLURM_CONF, START_SCRIPT))
    return f"factory/cluster:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def ensure(client: BuildClient, node_image: str, log: Log) -> str:
    """The cluster image on ``node_image``: reused when present, else built (a minute)."""
    wanted = image_name(node_image)
    if subprocess.run([client.path, "image", "inspect", wanted], capture_output=True,
                      check=False).returncode == 0:
        return wanted
    with tempfile.TemporaryDirectory() as context:
        for name, text in (("Dockerfile", dockerfile(node_image)), ("slurm.conf", SLURM_CONF),
                           ("start", START_SCRIPT)):
            (Path(context) / name).write_text(text)
        run_logged([*client.build_argv(), "--network", "host", "-t", wanted, context], log,
                   env=client.env())
    return wanted

