"""mpi-hybrid on the lab's cluster node, and the gpu test without a GPU, for real.

One small catalogue goes through build, convert and test once for the module: Debian 12 base
cells with MPICH 4.0 and Open MPI 4.1 (amd64), and two ``kind: gpu`` images.  The node
(``lab up``: the lab's Apptainer image plus Debian 13's Open MPI 5 and sid's MPICH) runs its
``mpirun`` launching ``apptainer exec`` ranks: its MPICH launches the container's MPICH 4.0;
its Open MPI (another major version) cannot launch Open MPI 4.1.  The SIF conversions (about
800 MB images) are most of the module's time; the tests themselves take seconds.

The gpu images: CUDA's toolkit is about 3 GB, too much for the suite, so their ``nvcc`` is a
shell script standing in for it.  One "compiles" (it writes a program that prints what the
real kernel prints), the other fails as nvcc does on bad code.  That shows what the pipeline
does with a gpu image on a machine without a GPU, for real: it compiles with the image's
``nvcc``, does not run the program, passes saying so, and fails the job when nvcc fails.
The working one is on the MPICH cell and has no ``mpicc`` (like an app's runtime stage
without compilers), so its MPI tests compile the hello world in the base cell's SIF
(``compile_in``); the failing one is on a bare Debian 12 image (no compilers, no MPI), which
is quick to convert.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.catalogues import init_repo, write
from tests.integration.lab import REPO, bring_up, run_pipeline

CATALOGUE = """\
repositories: {base: factorytest/hybrid, gpu: factorytest/hybrid, app: factorytest/hybridapp}
targets: {local: {registry: "127.0.0.1:5000"}}
axes:
  os:
    default: debian12
    values:
      debian12:
        bootstrap: {suite: bookworm, mirror: "http://deb.debian.org/debian"}
        defaults: {gcc: "12"}
  gcc: {values: ["12"]}
  mpi:
    default: none
    prefix: ""
    values:
      none: {tag: "", family: none, version: ""}
      ompi-4.1: {family: openmpi, version: "4.1"}
      mpich-4.0: {family: mpich, version: "4.0"}
  arch: {default: amd64, values: [amd64]}
images:
  - name: base
    kind: base
    recipe: images/base/debian
    axes: {os: [debian12], mpi: [mpich-4.0, ompi-4.1], arch: [amd64]}
  - name: cuda-fake
    kind: gpu
    recipe: images/gpu/fake-nvcc
    base: base
    axes: {os: [debian12], mpi: [mpich-4.0], arch: [amd64]}
    tag: "cuda-fake"
  # The failing nvcc on the bare OS (no compilers, no MPI): a small SIF, quick to convert.
  - name: plain
    kind: base
    recipe: images/base/plain
    axes: {os: [debian12], mpi: [none], arch: [amd64]}
    tag: "plain"
  - name: cuda-broken
    kind: gpu
    recipe: images/gpu/broken-nvcc
    base: plain
    axes: {os: [debian12], mpi: [none], arch: [amd64]}
    tag: "cuda-broken"
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
    # No mpicc and no compilers, as in a runtime stage (the MPI library stays); that also
    # halves what conversion has to squash (about 800 MB to 400 MB).
    "images/gpu/fake-nvcc/Dockerfile": (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY nvcc /usr/local/bin/nvcc\n"
        "RUN rm -rf /usr/bin/mpicc* /etc/alternatives/mpicc* /usr/lib/gcc /usr/include "
        "/usr/lib/*/*.a /usr/share/doc /usr/share/man && ! command -v mpicc\n"),
    "images/gpu/fake-nvcc/nvcc": FAKE_NVCC,
    "images/gpu/broken-nvcc/Dockerfile": (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY nvcc /usr/local/bin/nvcc\n"),
    "images/gpu/broken-nvcc/nvcc": BROKEN_NVCC,
    "images/base/plain/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
}
MPICH = "factorytest/hybrid:mpich-4.0@amd64"
OMPI = "factorytest/hybrid:ompi-4.1@amd64"
FAKE = "factorytest/hybrid:cuda-fake@amd64"
BROKEN = "factorytest/hybrid:cuda-broken@amd64"
PLAIN = "factorytest/hybrid:plain@amd64"


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    settings = bring_up()
    node = json.loads((settings.lab_dir / "node-image.json").read_text())
    root = tmp_path_factory.mktemp("hybrid")
    shutil.copytree(REPO / "images/base/debian", root / "images/base/debian")
    nonce = {f"{folder}/.test-run": uuid.uuid4().hex for folder in
             ("images/base/debian", "images/base/plain", "images/gpu/fake-nvcc",
              "images/gpu/broken-nvcc")}
    matrix = write(root, CATALOGUE, {**FILES, **nonce})
    for recipe in ("fake-nvcc", "broken-nvcc"):
        (root / "images/gpu" / recipe / "nvcc").chmod(0o755)
    (root / ".gitignore").write_text("out/\n")
    init_repo(root)
    code, jobs = run_pipeline(matrix, root / "out", "-j", "2", "--stages", "build,convert,test")
    return code, jobs, node


def results_of(job: dict) -> dict:
    return {t["name"]: t for t in job["stages"]["test"]["tests"]}


def test_results(ran):
    code, jobs, _ = ran
    assert code == 1  # the broken nvcc
    assert {i: j["result"] for i, j in jobs.items()} == {
        MPICH: "passed", OMPI: "passed", FAKE: "passed", PLAIN: "passed", BROKEN: "failed"}


def test_node_mpich_launches_the_container_mpich_with_its_own_library(ran):
    _, jobs, node = ran
    hybrid = results_of(jobs[MPICH])["mpi-hybrid"]
    assert hybrid["result"] == "passed", hybrid["reason"]
    # Which host MPI: the node's MPICH (its version as the node reports it).
    assert hybrid["reason"].startswith("host MPICH ")
    assert "(/usr/bin/mpirun.mpich on the lab's node), 4 ranks, each with the container's " \
        "MPI library (MPICH Version:" in hybrid["reason"]
    assert hybrid["reason"].endswith("4.0.2)")  # Debian 12's MPICH, not the node's
    assert "/usr/bin/mpirun.mpich" in [m["mpirun"] for m in node["mpis"]]
    log = Path(jobs[MPICH]["log"]).read_text()
    for rank in range(4):
        assert f"hello from rank {rank} of 4" in log


def test_node_open_mpi_of_another_major_version_is_skipped_with_the_reason(ran):
    _, jobs, _ = ran
    hybrid = results_of(jobs[OMPI])["mpi-hybrid"]
    assert hybrid["result"] == "skipped"
    assert hybrid["reason"].startswith("host Open MPI ")
    assert hybrid["reason"].endswith("cannot launch the container's Open MPI 4.1: different "
                                     "major version")
    assert "MPICH" not in hybrid["reason"]  # only the host MPI of the relevant family
    assert results_of(jobs[OMPI])["mpi"]["result"] == "passed"


def test_no_cell_says_the_host_has_no_apptainer(ran):
    _, jobs, _ = ran
    for job in jobs.values():
        assert "has no Apptainer" not in results_of(job)["mpi-hybrid"]["reason"]


def test_gpu_image_compiles_with_its_nvcc_and_is_not_run_without_a_gpu(ran):
    _, jobs, _ = ran
    tests = results_of(jobs[FAKE])
    assert tests["gpu"]["result"] == "passed"
    assert tests["gpu"]["reason"].startswith("compiled; not run: ")
    # No mpicc in this image: the MPI tests compiled the hello world in the base SIF.
    assert tests["mpi"] == {"name": "mpi", "result": "passed", "reason": "4 ranks, each once"}
    assert tests["mpi-hybrid"]["result"] == "passed"
    assert "compiled with the mpicc of factorytest_hybrid_mpich-4.0_amd64.sif" in Path(
        jobs[FAKE]["log"]).read_text()


def test_gpu_image_whose_nvcc_fails_fails_the_job(ran):
    _, jobs, _ = ran
    job = jobs[BROKEN]
    gpu = results_of(job)["gpu"]
    assert gpu["result"] == "failed"
    assert gpu["reason"].startswith("nvcc could not compile the CUDA smoke program: exit 2")
    assert 'identifier "cudaMalloc" is undefined' in gpu["reason"]
    assert job["reason"].startswith("test: gpu failed: nvcc could not compile")
    assert results_of(job)["mpi-hybrid"] == {"name": "mpi-hybrid", "result": "skipped",
                                             "reason": "no MPI in this image (mpi: none)"}
