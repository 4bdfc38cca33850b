"""Images that prove they work, for real: workloads, the hybrid MPI model, definition-file
recipes and the CUDA smoke test, read from the one pipeline run the app, catalogue and
cluster tests share (``tests/integration/apps_run.py``: what it holds and why).

The lab's cluster node (``lab up``: the Apptainer image plus Debian 13's Open MPI 5 and
sid's MPICH) runs its ``mpirun`` launching ``apptainer exec`` ranks: its MPICH launches the
container's MPICH 4.0; its Open MPI (another major version) cannot launch Open MPI 4.1, and
says so.  A gpu image on a machine without a GPU is compiled with its ``nvcc``, not run,
passes saying so, and fails when nvcc fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.tools.apptainer import find
from pipeline.tools.digests import sha256_file
from pipeline.tools.docker_engine import find_build_client
from pipeline.tools.oci_artifacts import SIF_LAYER
from tests.integration.lab import trusted


@pytest.fixture(scope="module")
def ran(apps_run):
    return apps_run


def results_of(job: dict) -> dict:
    return {t["name"]: t for t in job["stages"]["test"]["tests"]}


def test_every_job_has_the_result_it_should(ran):
    jobs = ran["jobs"]
    assert ran["code"] == 1  # the two broken images
    assert {k: j["result"] for k, j in jobs.items()} == {
        "mpich": "passed", "ompi": "passed", "plain": "passed", "fake": "passed",
        "broken-nvcc": "failed", "lammps": "failed", "pi": "passed",
        "lammps-real": "passed"}, \
        {k: j["reason"] for k, j in jobs.items()}


# -- the hybrid model ---------------------------------------------------------------------

def test_node_mpich_launches_the_container_mpich_with_its_own_library(ran):
    job = ran["jobs"]["mpich"]
    hybrid = results_of(job)["mpi-hybrid"]
    assert hybrid["result"] == "passed", hybrid["reason"]
    # Which host MPI: the node's MPICH (its version as the node reports it).
    assert hybrid["reason"].startswith("host MPICH ")
    assert "(/usr/bin/mpirun.mpich on the lab's node), 4 ranks, each with the container's " \
        "MPI library (MPICH Version:" in hybrid["reason"]
    assert hybrid["reason"].endswith("4.0.2)")  # Debian 12's MPICH, not the node's
    assert "/usr/bin/mpirun.mpich" in [m["mpirun"] for m in ran["node"]["mpis"]]
    log = Path(job["log"]).read_text()
    for rank in range(4):
        assert f"hello from rank {rank} of 4" in log


def test_node_open_mpi_of_another_major_version_is_skipped_with_the_reason(ran):
    tests = results_of(ran["jobs"]["ompi"])
    hybrid = tests["mpi-hybrid"]
    assert hybrid["result"] == "skipped"
    assert hybrid["reason"].startswith("host Open MPI 5.")
    assert hybrid["reason"].endswith("cannot launch the container's Open MPI 4.1: different "
                                     "major version")
    assert "MPICH" not in hybrid["reason"]  # only the host MPI of the relevant family
    assert tests["mpi"]["result"] == "passed"


def test_no_cell_says_the_host_has_no_apptainer(ran):
    for job in ran["jobs"].values():
        assert "has no Apptainer" not in results_of(job)["mpi-hybrid"]["reason"]


# -- workloads ----------------------------------------------------------------------------

def test_lammps_runs_the_melt_on_two_ranks_and_reports_its_energy(ran):
    test = results_of(ran["jobs"]["lammps-real"])["%test"]
    assert test["result"] == "passed", test["reason"]
    # "workload: lammps melt: 2 ranks, 250 steps, energy -2.2812174 (ref -2.281 +- 0.01), 3 s"
    assert test["reason"].startswith("workload: lammps melt: 2 ranks, 250 steps, energy -2.28")
    assert "(ref -2.281 +- 0.01)" in test["reason"]


def test_another_mpis_mpirun_fails_the_lammps_workload_naming_the_proc_count(ran):
    job = ran["jobs"]["lammps"]
    assert job["stages"]["build"]["result"] == "passed"  # it built: only running shows it
    test = results_of(job)["%test"]
    assert test["result"] == "failed"
    assert ("workload: lammps melt: FAILED: expected 1 run on 2 procs, got 2 run(s) on 1 "
            "procs" in test["reason"])
    assert "%test failed: exit 1; workload: lammps melt: FAILED" in job["reason"]


def test_failed_images_are_neither_published_nor_handed_off(ran):
    results = {p["repository"] + ":" + p["tag"]: p["result"]
               for p in ran["summary"]["publications"]}
    for key in ("lammps", "broken-nvcc"):
        job = ran["jobs"][key]
        assert job["id"].split("@")[0] not in results
        assert "publish" not in job["stages"] and "handoff" not in job["stages"]


# -- the definition-file recipe -----------------------------------------------------------

def test_the_definition_file_app_runs_its_code_on_two_ranks(ran):
    job = ran["jobs"]["pi"]
    assert job["stages"]["build"]["sif"] == job["sif"]  # apptainer built it: nothing converted
    tests = results_of(job)
    assert tests["%test"]["result"] == "passed"
    assert tests["%test"]["reason"].startswith(
        "workload: pi-mpi: 2 ranks, intervals 10000000 pi 3.14159265")
    # No mpicc in its runtime stage: the hello world was compiled in its base's SIF.
    assert tests["mpi"] == {"name": "mpi", "result": "passed", "reason": "4 ranks, each once"}
    assert "compiled with the mpicc of" in Path(job["log"]).read_text()
    assert "(this image has none)" in Path(job["log"]).read_text()


def test_the_definition_file_app_was_built_from_the_staged_base_by_digest(ran):
    settings, job, base = ran["settings"], ran["jobs"]["pi"], ran["jobs"]["ompi"]
    apptainer = find(settings.lab_dir, find_build_client(settings))
    sif = Path(job["sif"])
    deffile = apptainer.output(["inspect", "--deffile", str(sif)], [sif.parent],
                               unprivileged=True)
    froms = [line.split(":", 1)[1].strip() for line in deffile.splitlines()
             if line.lower().startswith("from:")]
    assert len(froms) == 2  # both stages
    digest = base["image_digest"].split(":", 1)[1]
    # The staged base's own layout, named by its digest: no tag, nothing to pull.
    assert all(f.endswith(f"/sha256-{digest}") and ":" not in f for f in froms), froms
    assert deffile.lower().count("bootstrap: oci") == 2
    labels = json.loads(apptainer.output(["inspect", "--json", str(sif)], [sif.parent],
                                         unprivileged=True))["data"]["attributes"]["labels"]
    assert labels["org.sjtuhpc.factory.id"] == job["id"]
    assert labels["org.sjtuhpc.factory.build-id"] == job["stages"]["build"]["build_id"]
    assert labels["org.opencontainers.image.base.digest"] == base["image_digest"]


def test_the_definition_file_app_is_published_as_the_tested_sif_and_nothing_else(ran):
    app, job = ran["app"], ran["jobs"]["pi"]
    registry = trusted()
    [publication] = [p for p in ran["summary"]["publications"] if p["repository"] == app
                     and p["tag"] == "pi-mpi-1.0"]
    assert publication["result"] == "published", publication
    assert registry.manifest(app, "pi-mpi-1.0") is None  # no image, no index
    build_id = job["stages"]["build"]["build_id"]
    for tag in ("pi-mpi-1.0-amd64", f"pi-mpi-1.0-amd64-{build_id[:12]}"):
        body, _, _ = registry.manifest(f"{app}-sif", tag)
        manifest = json.loads(body)
        [layer] = manifest["layers"]
        assert layer["mediaType"] == SIF_LAYER
        assert layer["digest"] == sha256_file(Path(job["sif"]))
        assert manifest["annotations"]["org.sjtuhpc.factory.build-id"] == build_id
    assert job["stages"]["publish"]["sif"].endswith(f"{app}-sif:pi-mpi-1.0-amd64")


# -- CUDA smoke without a GPU -------------------------------------------------------------

def test_gpu_image_compiles_with_its_nvcc_and_is_not_run_without_a_gpu(ran):
    job = ran["jobs"]["fake"]
    tests = results_of(job)
    assert tests["gpu"]["result"] == "passed"
    assert tests["gpu"]["reason"].startswith("compiled; not run: ")
    assert job["result"] == "passed"


def test_gpu_image_whose_nvcc_fails_fails_the_job(ran):
    job = ran["jobs"]["broken-nvcc"]
    gpu = results_of(job)["gpu"]
    assert gpu["result"] == "failed"
    assert gpu["reason"].startswith("nvcc could not compile the CUDA smoke program: exit 2")
    assert 'identifier "cudaMalloc" is undefined' in gpu["reason"]
    assert job["reason"].startswith("test: gpu failed: nvcc could not compile")
    assert results_of(job)["mpi-hybrid"] == {"name": "mpi-hybrid", "result": "skipped",
                                             "reason": "no MPI in this image (mpi: none)"}
