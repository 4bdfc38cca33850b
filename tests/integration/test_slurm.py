"""The seed's job script on the lab's one-node Slurm cluster (``lab up --with cluster``).

A user of a downstream cluster submits, with ``sbatch``, a script that has ``srun`` start
``apptainer exec <sif> <program>`` ranks.  Here the cluster is the lab's offline Slurm
container, the SIFs are the Debian 12 base cells (Open MPI 4.1, MPICH 4.0) that the shared
pipeline run built (``apps_run``), copied into its shared folder, and the program is the
pipeline's MPI hello world compiled with each SIF's
``mpicc``.  A job passes only when ranks 0..3 each answer once, in one world of 4, each
with the SIF's MPI library (``mpi_hybrid.verdict``, the mpi-hybrid test's own rule): four
singletons of a PMI that did not reach the ranks end COMPLETED too, and must not pass.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import pytest

from pipeline.lab import cluster_image, slurm
from pipeline.lab import commands as lab_commands
from pipeline.stages.checks.mpi import libraries_seen
from pipeline.stages.checks.mpi_hybrid import verdict
from tests.integration.cluster_lab import (
    MPIS,
    bring_up_cluster,
    compile_hello,
    hello_job,
)
from tests.integration.lab import lab_settings

JOB_TIMEOUT = 180


@pytest.fixture(scope="module")
def cluster() -> slurm.Cluster:
    return bring_up_cluster()


@pytest.fixture(scope="module")
def sifs(cluster, apps_run):
    """``{MPIS name: SIF}``: the run's base SIFs, in the cluster's shared folder."""
    folder = cluster.shared / "sifs"
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, job in (("openmpi-4.1", "ompi"), ("mpich-4.0", "mpich")):
        source = Path(apps_run["jobs"][job]["sif"])
        found[name] = folder / f"{apps_run['base'].replace('/', '_')}-{name}.sif"
        shutil.copyfile(source, found[name])
        found[name].chmod(0o644)
    yield found
    for sif in found.values():
        sif.unlink(missing_ok=True)
        shutil.rmtree(sif.parent / f"{sif.stem}-hello", ignore_errors=True)


def container_library(cluster: slurm.Cluster, sif, binary) -> str:
    """What the hello world reports as its MPI library alone (a singleton) in the SIF."""
    done = cluster.run(["apptainer", "exec", str(sif), str(binary)], timeout=120)
    seen = libraries_seen(done.stdout, 1).get(0, [])
    assert done.returncode == 0 and len(seen) == 1, done.stdout + done.stderr
    return seen[0]


def run_job(cluster: slurm.Cluster, script: str) -> tuple[str, str, dict, float]:
    started = time.monotonic()
    job_id = cluster.submit(script)
    state = cluster.wait(job_id, JOB_TIMEOUT)
    seconds = time.monotonic() - started
    output, job = cluster.output(job_id), cluster.job(job_id)
    Path(job["StdOut"]).unlink(missing_ok=True)  # in the shared folder: read, not kept
    return state, output, job, seconds


@pytest.mark.parametrize("mpi", MPIS.values(), ids=list(MPIS))
def test_srun_starts_one_world_of_ranks_each_in_the_sif(cluster, sifs, mpi):
    sif = sifs[mpi.name]
    binary = compile_hello(cluster, sif)
    library = container_library(cluster, sif, binary)
    assert library.startswith(mpi.library)
    script = hello_job(cluster, sif, binary, mpi.plugin)
    assert f"srun --mpi={mpi.plugin} -n 4 apptainer exec" in script
    state, output, job, seconds = run_job(cluster, script)
    assert state == "COMPLETED", output
    assert job["UserId"] == f"{cluster_image.USER}({cluster_image.UID})"  # not root
    result = verdict(f"srun --mpi={mpi.plugin}", 0, output, "", library)
    assert result.result == "passed", result.reason
    print(f"{mpi.name}: srun --mpi={mpi.plugin}: job {job['JobId']} {state} in {seconds:.1f} s "
          f"(submit to finished), {result.reason}")


def test_ranks_the_pmi_did_not_reach_are_not_one_world(cluster, sifs):
    """MPICH under ``--mpi=pmix``: each rank is a singleton, the job still COMPLETED; the
    check must say so rather than count four ranks."""
    sif = sifs["mpich-4.0"]
    binary = compile_hello(cluster, sif)
    state, output, _, _ = run_job(cluster, hello_job(cluster, sif, binary, "pmix"))
    assert state == "COMPLETED"
    assert output.count("hello from rank 0 of 1") == 4, output
    result = verdict("srun --mpi=pmix", 0, output, "", container_library(cluster, sif, binary))
    assert result.result == "failed"


def test_a_job_loads_a_module_from_the_shared_folder(cluster):
    """Lmod's ``module`` is in the job's shell (submitted from a login shell, as users do)
    and reads modulefiles from the shared folder, where ``cluster pull`` writes them."""
    modules = cluster.shared / "h12-modules"
    (modules / "probe").mkdir(parents=True, exist_ok=True)
    (modules / "probe" / "1.0.lua").write_text('setenv("PROBE_LOADED", "yes")\n')
    try:
        state, output, _, _ = run_job(cluster, f"#!/bin/bash\nmodule use {modules}\n"
                                      "module load probe/1.0\necho PROBE_LOADED=$PROBE_LOADED\n")
    finally:
        shutil.rmtree(modules, ignore_errors=True)
    assert state == "COMPLETED", output
    assert "PROBE_LOADED=yes" in output


def test_the_cluster_is_offline_and_offers_pmix_and_pmi2(cluster):
    interfaces = cluster.run(["ls", "/sys/class/net"]).stdout.split()
    assert interfaces == ["lo"]
    assert {"pmix", "pmi2"} <= set(cluster.mpi_plugins)
    assert cluster.shared == slurm.shared_folder(lab_settings().lab_dir)
    written = cluster.run(["sh", "-c", f"echo from-the-node > {cluster.shared}/h12-probe"])
    assert written.returncode == 0, written.stderr
    probe = cluster.shared / "h12-probe"
    try:
        assert probe.read_text() == "from-the-node\n"  # the same folder on the host
    finally:
        probe.unlink(missing_ok=True)


def test_status_up_and_stop(cluster):
    """``status`` shows the node idle; a second ``up`` keeps the cluster; once stopped,
    ``status`` says so (exit 1) and ``up --with cluster`` starts it again."""
    settings = lab_settings()
    out = io.StringIO()
    lab_commands.status(settings, out)
    row = next(line for line in out.getvalue().splitlines() if "cluster" in line)
    assert f"node {cluster_image.NODE} idle" in row and "yes" in row, out.getvalue()
    out = io.StringIO()
    assert lab_commands.up(settings, out, extras=("cluster",)) == 0
    assert f"cluster: {slurm.CONTAINER} running" in out.getvalue()
    try:
        assert slurm.stop(settings.lab_dir, cluster.docker)
        assert slurm.find(settings.lab_dir, cluster.docker) is None
        out = io.StringIO()
        assert lab_commands.status(settings, out, extras=("cluster",)) == 1
        assert "not running" in out.getvalue()
    finally:
        out = io.StringIO()
        assert lab_commands.up(settings, out, extras=("cluster",)) == 0
    assert f"cluster: {slurm.CONTAINER} started" in out.getvalue()
    assert slurm.find(settings.lab_dir, cluster.docker).node_state() == "idle"
