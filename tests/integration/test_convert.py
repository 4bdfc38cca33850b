"""Convert and test stages for real: containerized Apptainer, SIFs, %test, MPI smoke tests.

One catalogue is run through build, convert and test once for the module; the tests then
read its summary, its SIFs (with Apptainer itself) and its logs.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from pipeline.tools.apptainer import find
from pipeline.tools.docker_engine import find_build_client
from tests.catalogues import init_repo, lab_catalogue, write
from tests.integration.lab import REPO, bring_up, run_pipeline

CATALOGUE = lab_catalogue("factorytest/sifbase", "factorytest/sifapp", """\
images:
  - name: base
    kind: base
    description: Debian 12 with GCC and Open MPI, for the tests
    recipe: images/base/debian
    axes: {os: [debian12], mpi: [ompi-4.1], arch: [amd64, arm64]}
  - name: plain
    kind: base
    recipe: images/base/plain
    axes: {os: [debian12], arch: [amd64]}
    tag: plain
  - name: failing-test
    kind: base
    recipe: images/base/failing-test
    axes: {os: [debian12], arch: [amd64]}
    tag: failing-test
  - name: on-failing-test
    kind: app
    recipe: images/base/plain
    base: failing-test
    axes: {os: [debian12], arch: [amd64]}
    tag: on-failing-test
""")

FILES = {
    "images/base/plain/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
    "images/base/plain/test.sh": "#!/bin/sh\ntest -x /bin/sh\necho \"plain image on ${OS}\"\n",
    "images/base/failing-test/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
    # Fails before its last line: only `set -eu` in the generated %test makes that count.
    "images/base/failing-test/test.sh": "#!/bin/sh\necho checking\nfalse\necho still here\n",
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    settings = bring_up()
    root = tmp_path_factory.mktemp("sifs")
    shutil.copytree(REPO / "images/base/debian", root / "images/base/debian")
    nonce = {f"{folder}/.test-run": uuid.uuid4().hex for folder in
             ("images/base/debian", "images/base/plain", "images/base/failing-test")}
    matrix = write(root, CATALOGUE, {**FILES, **nonce})
    (root / ".gitignore").write_text("out/\n")
    init_repo(root)
    code, jobs = run_pipeline(matrix, root / "out", "-j", "2", "--stages", "build,convert,test")
    apptainer = find(settings.lab_dir, find_build_client(settings))
    return code, jobs, apptainer


def results_of(job: dict) -> dict:
    return {t["name"]: t for t in job["stages"]["test"]["tests"]}


def test_results(ran):
    code, jobs, _ = ran
    assert code == 1
    assert {i: j["result"] for i, j in jobs.items()} == {
        "factorytest/sifbase:ompi-4.1@amd64": "passed",
        "factorytest/sifbase:ompi-4.1@arm64": "passed",
        "factorytest/sifbase:plain@amd64": "passed",
        "factorytest/sifbase:failing-test@amd64": "failed",
        "factorytest/sifapp:on-failing-test@amd64": "skipped",
    }


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_sif_has_its_definition_arch_and_labels(ran, arch):
    _, jobs, apptainer = ran
    job = jobs[f"factorytest/sifbase:ompi-4.1@{arch}"]
    sif = Path(job["sif"])
    assert sif.name == f"factorytest_sifbase_ompi-4.1_{arch}.sif"
    assert sif.with_suffix(".def").read_text().startswith("Bootstrap: docker-daemon\nFrom: ")
    listing = apptainer.output(["sif", "list", str(sif)], [sif.parent], unprivileged=True)
    assert "Def.FILE" in listing
    assert f"FS (Squashfs/*System/{arch})" in listing
    labels = json.loads(apptainer.output(["inspect", "--json", str(sif)], [sif.parent],
                                         unprivileged=True))
    labels = labels["data"]["attributes"]["labels"]
    assert labels["org.sjtuhpc.factory.id"] == f"factorytest/sifbase:ompi-4.1@{arch}"
    assert labels["org.sjtuhpc.factory.build-id"] == job["stages"]["build"]["build_id"]
    assert labels["org.sjtuhpc.factory.image-digest"] == job["image_digest"]
    assert labels["org.sjtuhpc.factory.var.mpi_family"] == "openmpi"
    assert len(labels["org.opencontainers.image.revision"]) >= 40
    deffile = apptainer.output(["inspect", "--deffile", str(sif)], [sif.parent],
                               unprivileged=True)
    assert "set -eu" in deffile and "mpirun --version" in deffile


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_percent_test_and_mpi_smoke_test_pass_with_four_ranks(ran, arch):
    _, jobs, _ = ran
    job = jobs[f"factorytest/sifbase:ompi-4.1@{arch}"]
    tests = results_of(job)
    assert tests["%test"]["result"] == "passed"
    assert tests["mpi"] == {"name": "mpi", "result": "passed", "reason": "4 ranks, each once"}
    log = Path(job["log"]).read_text()
    for rank in range(4):
        assert f"hello from rank {rank} of 4" in log
    # It ran as the SIF's own arch: aarch64 under QEMU for arm64.
    assert f"machine {'aarch64' if arch == 'arm64' else 'x86_64'}" in log
    hybrid = tests["mpi-hybrid"]
    assert hybrid["result"] == "skipped" and hybrid["reason"]


def test_image_without_mpi_is_reported_as_no_mpi(ran):
    _, jobs, _ = ran
    tests = results_of(jobs["factorytest/sifbase:plain@amd64"])
    assert tests["%test"]["result"] == "passed"
    assert tests["mpi"] == {"name": "mpi", "result": "skipped",
                            "reason": "no MPI in this image (mpi: none)"}


def test_failing_percent_test_fails_the_job_and_what_needs_it(ran):
    _, jobs, _ = ran
    job = jobs["factorytest/sifbase:failing-test@amd64"]
    test = results_of(job)["%test"]
    assert test["result"] == "failed"
    assert "checking" in test["reason"]  # the failing output
    assert job["reason"].startswith("test: %test failed: exit 1")
    log = Path(job["log"]).read_text()
    assert "checking" in log and "still here" not in log
    dependent = jobs["factorytest/sifapp:on-failing-test@amd64"]
    assert dependent["reason"] == "needs factorytest/sifbase:failing-test@amd64, which failed"


def test_rerun_reuses_the_sifs_and_tests_again(ran, tmp_path):
    _, jobs, _ = ran
    root = Path(jobs["factorytest/sifbase:plain@amd64"]["sif"]).parent.parent.parent
    code, again = run_pipeline(root / "matrix.yaml", root / "out", "--select",
                               "factorytest/sifbase:plain@*", "--stages", "build,convert,test")
    assert code == 0
    job = again["factorytest/sifbase:plain@amd64"]
    assert job["reason"].startswith("already built; SIF reused; %test passed")


def test_conversion_works_in_memory_and_on_disk(ran, tmp_path, monkeypatch):
    _, jobs, _ = ran
    # This machine has the memory for it: the shared run converted on a tmpfs.
    assert "scratch in memory: the image" in Path(
        jobs["factorytest/sifbase:ompi-4.1@arm64"]["log"]).read_text()
    monkeypatch.setenv("PIPELINE_CONVERT_SCRATCH", "disk")
    root = Path(jobs["factorytest/sifbase:plain@amd64"]["sif"]).parent.parent.parent
    code, again = run_pipeline(root / "matrix.yaml", tmp_path / "out", "--select",
                               "factorytest/sifbase:plain@amd64", "--stages", "build,convert,test")
    job = again["factorytest/sifbase:plain@amd64"]
    assert code == 0, job["reason"]
    assert "scratch on disk: PIPELINE_CONVERT_SCRATCH=disk" in Path(job["log"]).read_text()
    assert job["stages"]["convert"]["cached"] is False
