"""Pieces for tests on the lab's one-node Slurm cluster (``lab up --with cluster``).

* :func:`bring_up_cluster`: the lab with its cluster, or a skip saying why Slurm cannot run
  on this machine (only where the lab's Apptainer container cannot run SIFs unprivileged:
  on this project's machines it can, and the tests run);
* :data:`MPIS`: the MPIs of the Debian 12 base cells the tests run under Slurm, with the
  ``srun --mpi`` plugin that gives their ranks one world (the SIFs themselves are the
  shared pipeline run's, ``apps_run``);
* :func:`compile_hello`: the pipeline's MPI hello world compiled with the SIF's ``mpicc``
  on the cluster, as a user would, into the shared folder;
* :func:`hello_job`: a job script of the users' shape (``srun --mpi=... apptainer exec``).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.lab import commands as lab_commands
from pipeline.lab import slurm
from pipeline.stages.checks.mpi import hello_source
from pipeline.stages.checks.mpi_hybrid import share_namespace
from pipeline.tools import apptainer
from pipeline.tools.docker_engine import find_build_client
from tests.integration.lab import DOCKER, bring_up, lab_settings

MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class TestMpi:
    name: str  # what the SIF holds, e.g. openmpi-4.1
    suite: str  # the Debian release it comes from
    packages: str  # what mmdebstrap adds to a minbase
    plugin: str  # srun --mpi=PLUGIN that gives its ranks one world
    library: str  # how MPI_Get_library_version's first line starts


MPIS = {mpi.name: mpi for mpi in (
    # Open MPI 4.1 and 5 take their rank and world from PMIx (Slurm's pmix_v5 serves the
    # PMIx 4.2 client of Debian 12's Open MPI too); with pmi2 or none MPI_Init fails.
    TestMpi("openmpi-4.1", "bookworm", "openmpi-bin,libopenmpi-dev,gcc,libc6-dev", "pmix",
            "Open MPI v4.1"),
    # Debian's MPICH speaks PMI-2 to Slurm's pmi2 plugin; with pmix or none each rank is a
    # singleton (rank 0 of 1), and the job still ends COMPLETED.
    TestMpi("mpich-4.0", "bookworm", "mpich,libmpich-dev,gcc,libc6-dev", "pmi2",
            "MPICH Version: 4.0"),
)}


def bring_up_cluster() -> slurm.Cluster:
    """The lab, with its cluster, brought up (idempotent); a skip with the reason where this
    machine cannot run unprivileged Apptainer in a container (then no Slurm job can run a
    SIF either)."""
    settings = bring_up()
    runtime = apptainer.find(settings.lab_dir, find_build_client(settings))
    if runtime.kind == "container":
        probe = subprocess.run(runtime.argv(["version"], [], unprivileged=True),
                               capture_output=True, text=True, check=False)
        if probe.returncode:
            pytest.skip("Slurm cannot run here: the lab's container cannot run Apptainer "
                        f"unprivileged (user namespaces, FUSE): {probe.stderr.strip()[-300:]}")
    assert lab_commands.up(settings, extras=("cluster",)) == 0, "lab up --with cluster failed"
    cluster = slurm.find(settings.lab_dir, DOCKER)
    assert cluster is not None, "lab up --with cluster recorded no running cluster"
    return cluster


def compile_hello(cluster: slurm.Cluster, sif: Path) -> Path:
    """``mpi_hello`` compiled with the SIF's ``mpicc``, on the cluster, next to the SIF."""
    folder = sif.parent / f"{sif.stem}-hello"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o1777)
    source = hello_source(folder)
    binary = folder / "mpi_hello"
    done = cluster.run(["apptainer", "exec", str(sif), "mpicc", "-o", str(binary),
                        str(source)], timeout=300)
    assert done.returncode == 0, f"mpicc in {sif.name} failed: {done.stdout}{done.stderr}"
    return binary


def hello_job(cluster: slurm.Cluster, sif: Path, binary: Path, plugin: str,
              ranks: int = 4) -> str:
    """The users' job script: ``ranks`` tasks, ``srun`` starting ``apptainer exec`` ranks.

    The ranks run ``apptainer exec --sharens`` (as the mpi-hybrid test does, for the same
    reason: ``share_namespace``): each unprivileged ``apptainer exec`` otherwise makes a user
    namespace of its own, and MPICH's UCX then cannot open another rank's shared memory
    (``/proc/<pid>/fd/<n>: Permission denied``, MPI_Init fails); Open MPI only loses CMA.
    ``srun`` starts all of a node's ranks from one slurmstepd, so they share one."""
    runtime = apptainer.find(lab_settings().lab_dir, find_build_client(lab_settings()))
    options = " ".join(share_namespace(runtime))
    return (f"#!/bin/bash\n"
            f"#SBATCH -n {ranks}\n"
            f"#SBATCH -o {cluster.shared}/job-%j.out\n"
            f"srun --mpi={plugin} -n {ranks} apptainer exec {options} {sif} {binary}\n")
