"""Images that prove they work, for real: workloads, the hybrid MPI model, definition-file
recipes and the CUDA smoke test, in one run of the pipeline (``main`` mode, amd64).

One run, because SIF conversion is most of each job's time and these share their base
cells: a Debian 12 catalogue with

* base cells with MPICH 4.0 and Open MPI 4.1.  The lab's cluster node (``lab up``: the
  Apptainer image plus Debian 13's Open MPI 5 and sid's MPICH) runs its ``mpirun``
  launching ``apptainer exec`` ranks: its MPICH launches the container's MPICH 4.0; its Open
  MPI (another major version) cannot launch Open MPI 4.1, and says so;
* ``lammps-broken``: the real LAMMPS recipe plus one step, MPICH installed and made the
  ``mpirun`` alternative (as a careless recipe might): the Open MPI ``lmp`` then starts as
  two separate 1-rank runs, and the real ``test.sh`` (the melt on 2 ranks) must fail.  The
  real recipe passing with its workload line is what ``nox -s pipeline`` shows (its default
  selection is the LAMMPS image, both arches); it costs one more big conversion here;
* ``pi-mpi``: the shipped definition-file example (two stages, ``%files from build``, the
  runtime stage without compilers), its ``From:`` renamed to this catalogue's base: built
  by Apptainer FROM the staged base by digest, tested, published as SIFs only;
* two ``kind: gpu`` images.  CUDA's toolkit is about 3 GB, too much for the suite, so their
  ``nvcc`` is a shell script standing in for it: one "compiles" (it writes a program that
  prints what the real kernel prints), the other fails as nvcc does on bad code.  That shows
  what the pipeline does with a gpu image on a machine without a GPU: it compiles with the
  image's ``nvcc``, does not run the program, passes saying so, and fails the job when nvcc
  fails.  Both are on a bare Debian 12 image, quick to convert.

Repositories are new on every run (nothing is "already published"); the builds themselves
come from the engine's layer cache after the first time.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import uuid
from pathlib import Path

import pytest

from pipeline.tools.apptainer import find
from pipeline.tools.digests import sha256_file
from pipeline.tools.docker_engine import find_build_client
from pipeline.tools.oci_artifacts import SIF_LAYER
from tests.catalogues import init_repo, write
from tests.integration.lab import REPO, bring_up, run_pipeline, trusted

IMAGES = """\
images:
  - name: base
    kind: base
    recipe: images/base/debian
    axes: {os: [debian12], mpi: [mpich-4.0, ompi-4.1], arch: [amd64]}
  - name: lammps-broken
    kind: app
    recipe: images/app/lammps-broken
    base: base
    axes: {os: [debian12], arch: [amd64]}
    include: [{mpi: ompi-4.1, version: "2022"}]
    tag: "lammps-broken-{version}"
  - name: pi-mpi
    kind: app
    recipe: images/app/pi-mpi
    axes: {os: [debian12], arch: [amd64]}
    include: [{mpi: ompi-4.1, version: "1.0"}]
    tag: "pi-mpi-{version}"
  # The gpu images on the bare OS (no compilers, no MPI): small SIFs, quick to convert.
  - name: plain
    kind: base
    recipe: images/base/plain
    axes: {os: [debian12], mpi: [none], arch: [amd64]}
    tag: "plain"
  - name: cuda-fake
    kind: gpu
    recipe: images/gpu/fake-nvcc
    base: plain
    axes: {os: [debian12], mpi: [none], arch: [amd64]}
    tag: "cuda-fake"
  - name: cuda-broken
    kind: gpu
    recipe: images/gpu/broken-nvcc
    base: plain
    axes: {os: [debian12], mpi: [none], arch: [amd64]}
    tag: "cuda-broken"
"""


def catalogue(base: str, app: str) -> str:
    return f"""\
repositories: {{base: {base}, gpu: {base}, app: {app}}}
targets: {{local: {{registry: "127.0.0.1:5000"}}}}
axes:
  os:
    default: debian12
    values:
      debian12:
        bootstrap: {{suite: bookworm, mirror: "http://deb.debian.org/debian"}}
        defaults: {{gcc: "12"}}
  gcc: {{values: ["12"]}}
  mpi:
    default: none
    prefix: ""
    values:
      none: {{tag: "", family: none, version: ""}}
      ompi-4.1: {{family: openmpi, version: "4.1"}}
      mpich-4.0: {{family: mpich, version: "4.0"}}
  arch: {{default: amd64, values: [amd64]}}
""" + IMAGES


# The real LAMMPS recipe plus one step: MPICH beside the base's Open MPI, and its launcher
# made `mpirun`.  lmp stays linked against Open MPI.
BREAK_MPI = """
# Broken on purpose (tests/integration/test_app_images.py): another MPI's mpirun.
RUN set -eux; apt-get update; apt-get install -y --no-install-recommends mpich; \\
    update-alternatives --set mpirun /usr/bin/mpirun.mpich; rm -rf /var/lib/apt/lists/*
"""

# A stand-in for nvcc: checks it was given a CUDA source and -o, then writes a program that
# prints what the smoke program's kernel computes on a GPU.
FAKE_NVCC = textwrap.dedent("""\
    #!/bin/sh
    set -eu
    out=""; src=""
    while [ $# -gt 0 ]; do
      case "$1" in -o) out=$2; shift ;; *.cu) src=$1 ;; esac
      shift
    done
    grep -q "__global__" "$src"
    printf '#!/bin/sh\\necho "cuda result 1 4 9 16"\\n' > "$out"
    chmod +x "$out"
    """)
BROKEN_NVCC = ("#!/bin/sh\necho 'square.cu(3): error: identifier \"cudaMalloc\" is undefined' "
               ">&2\nexit 2\n")
FILES = {
    "images/gpu/fake-nvcc/Dockerfile": (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY nvcc /usr/local/bin/nvcc\n"),
    "images/gpu/fake-nvcc/nvcc": FAKE_NVCC,
    "images/gpu/broken-nvcc/Dockerfile": (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY nvcc /usr/local/bin/nvcc\n"),
    "images/gpu/broken-nvcc/nvcc": BROKEN_NVCC,
    "images/base/plain/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    settings = bring_up()
    node = json.loads((settings.lab_dir / "node-image.json").read_text())
    root = tmp_path_factory.mktemp("apps")
    space = f"factorytest-{uuid.uuid4().hex[:8]}"
    base, app = f"{space}/base", f"{space}/app"
    for recipe in ("images/base/debian", "images/app/pi-mpi"):
        shutil.copytree(REPO / recipe, root / recipe)
    shutil.copytree(REPO / "images/app/lammps", root / "images/app/lammps-broken")
    dockerfile = root / "images/app/lammps-broken/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + BREAK_MPI)
    recipe = root / "images/app/pi-mpi/recipe.def"
    recipe.write_text(recipe.read_text().replace("sjtuhpc/hpc-base-container:", f"{base}:"))
    matrix = write(root, catalogue(base, app), FILES)
    for folder in ("fake-nvcc", "broken-nvcc"):
        (root / "images/gpu" / folder / "nvcc").chmod(0o755)
    (root / ".gitignore").write_text("out/\n")
    init_repo(root)
    code, jobs = run_pipeline(matrix, root / "out", "--mode", "main", "-j", "2")
    summary = json.loads((root / "out/summary.json").read_text())
    ids = {"mpich": f"{base}:mpich-4.0@amd64", "ompi": f"{base}:ompi-4.1@amd64",
           "plain": f"{base}:plain@amd64", "fake": f"{base}:cuda-fake@amd64",
           "broken-nvcc": f"{base}:cuda-broken@amd64",
           "lammps": f"{app}:lammps-broken-2022@amd64", "pi": f"{app}:pi-mpi-1.0@amd64"}
    return {"code": code, "jobs": {k: jobs[v] for k, v in ids.items()}, "summary": summary,
            "node": node, "app": app, "settings": settings}


def results_of(job: dict) -> dict:
    return {t["name"]: t for t in job["stages"]["test"]["tests"]}


def test_every_job_has_the_result_it_should(ran):
    jobs = ran["jobs"]
    assert ran["code"] == 1  # the two broken images
    assert {k: j["result"] for k, j in jobs.items()} == {
        "mpich": "passed", "ompi": "passed", "plain": "passed", "fake": "passed",
        "broken-nvcc": "failed", "lammps": "failed", "pi": "passed"}, \
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
