"""The build stage for real: Docker engine, lab registry, QEMU for arm64, Debian bootstrap.

One catalogue is run once for the module (cold on a new machine: a few minutes), then its
results are checked from several sides.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.catalogues import init_repo, lab_catalogue, write
from tests.integration.lab import REPO, bring_up, docker, image_config, run_pipeline

HELLO = (REPO / "pipeline/stages/smoke/mpi_hello.c").read_text()

CATALOGUE = lab_catalogue("factorytest/base", "factorytest/app", """\
images:
  - name: base
    kind: base
    recipe: images/base/debian
    axes: {os: [debian12], mpi: [ompi-4.1], arch: [amd64, arm64]}
  - name: hello
    kind: app
    recipe: images/app/hello
    base: base
    axes: {os: [debian12], mpi: [ompi-4.1], arch: [amd64, arm64]}
    tag: "hello-{default}"
  - name: broken
    kind: base
    recipe: images/base/broken
    axes: {os: [debian12], arch: [amd64]}
    tag: "broken"
  - name: on-broken
    kind: app
    recipe: images/app/hello
    base: broken
    axes: {os: [debian12], arch: [amd64]}
    tag: "on-broken"
  - name: rocky
    kind: base
    recipe: images/base/rocky
    axes: {os: [rocky8], arch: [amd64]}
    tag: "rocky"
""")

FILES = {
    "images/app/hello/Dockerfile": (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY mpi_hello.c /opt/hello/\n"
        "RUN mpicc -o /opt/hello/hello /opt/hello/mpi_hello.c\n"),
    "images/app/hello/mpi_hello.c": HELLO,
    "images/base/broken/Dockerfile": (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo 'about to fail on purpose' && exit 3\n"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Run the catalogue once; every test reads its summary and images."""
    bring_up()
    root = tmp_path_factory.mktemp("catalogue")
    for recipe in ("images/base/debian", "images/base/rocky"):
        shutil.copytree(REPO / recipe, root / recipe)
    # A fresh file in every recipe gives fresh build_ids, so this run really builds (with
    # Docker's layer cache) instead of finding the images of an earlier test run.
    nonce = {f"{folder}/.test-run": uuid.uuid4().hex for folder in
             ("images/base/debian", "images/base/rocky", "images/base/broken", "images/app/hello")}
    matrix = write(root, CATALOGUE, {**FILES, **nonce})
    (root / ".gitignore").write_text("out/\n")
    init_repo(root)
    # The build stage only: converting and testing have their own tests (test_convert.py).
    code, jobs = run_pipeline(matrix, root / "out", "-j", "2", "--stages", "build")
    return code, jobs, root


def test_run_exit_code_reports_the_failures(built):
    code, jobs, _ = built
    assert code == 1
    assert {i: j["result"] for i, j in jobs.items()} == {
        "factorytest/base:ompi-4.1@amd64": "passed",
        "factorytest/base:ompi-4.1@arm64": "passed",
        "factorytest/app:hello-ompi-4.1@amd64": "passed",
        "factorytest/app:hello-ompi-4.1@arm64": "passed",
        "factorytest/base:broken@amd64": "failed",
        "factorytest/app:on-broken@amd64": "skipped",
        "factorytest/base:rocky@amd64": "failed",
    }


@pytest.mark.parametrize("arch,machine", [("amd64", "x86_64"), ("arm64", "aarch64")])
def test_base_cell_has_the_right_arch_labels_and_toolchain(built, arch, machine):
    _, jobs, root = built
    job = jobs[f"factorytest/base:ompi-4.1@{arch}"]
    reference = job["stages"]["build"]["reference"]
    # A pr-mode run (the default): pr staging, never the trusted registry.
    assert reference.startswith("127.0.0.1:5001/factory-staging-pr/factorytest/base@sha256:")
    assert job["image_digest"] == reference.split("@")[1]
    config = image_config(reference)
    assert config["Architecture"] == arch
    labels = config["Config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "factorytest/base:ompi-4.1"
    assert labels["org.opencontainers.image.version"] == "ompi-4.1"
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == revision
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert labels["org.opencontainers.image.source"]
    assert labels["org.opencontainers.image.base.name"].startswith(
        "127.0.0.1:5001/factory-pr/os:debian12-")
    assert labels["org.opencontainers.image.base.digest"].startswith("sha256:")
    assert labels["org.sjtuhpc.factory.build-id"] == job["stages"]["build"]["build_id"]
    assert labels["org.sjtuhpc.factory.var.gcc"] == "12"
    assert labels["org.sjtuhpc.factory.var.mpi_family"] == "openmpi"
    out = docker("run", "--rm", "--platform", f"linux/{arch}", reference, "sh", "-c",
                 "uname -m; gcc --version | head -n1; mpirun --version | head -n1")
    lines = out.splitlines()
    assert lines[0] == machine
    assert " 12." in lines[1]
    assert "(Open MPI) 4.1" in lines[2]


def four_ranks(out: str) -> list[int]:
    return sorted(int(m) for m in re.findall(r"hello from rank (\d+) of 4", out))


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_mpicc_compiles_and_mpirun_runs_four_distinct_ranks_in_the_base(built, arch):
    _, jobs, _ = built
    reference = jobs[f"factorytest/base:ompi-4.1@{arch}"]["stages"]["build"]["reference"]
    hello = REPO / "pipeline/stages/smoke/mpi_hello.c"
    out = docker("run", "--rm", "--platform", f"linux/{arch}", "-v",
                 f"{hello}:/tmp/hello.c:ro", reference, "sh", "-c",
                 "mpicc -o /tmp/hello /tmp/hello.c && "
                 "mpirun --allow-run-as-root --oversubscribe -np 4 /tmp/hello")
    assert four_ranks(out) == [0, 1, 2, 3], out


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_app_compiled_on_the_base_runs_four_distinct_ranks(built, arch):
    _, jobs, _ = built
    reference = jobs[f"factorytest/app:hello-ompi-4.1@{arch}"]["stages"]["build"]["reference"]
    out = docker("run", "--rm", "--platform", f"linux/{arch}", reference,
                 "mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "4", "/opt/hello/hello")
    assert four_ranks(out) == [0, 1, 2, 3], out


def test_app_builds_from_its_base_by_digest(built):
    _, jobs, _ = built
    for arch in ("amd64", "arm64"):
        base = jobs[f"factorytest/base:ompi-4.1@{arch}"]
        app = jobs[f"factorytest/app:hello-ompi-4.1@{arch}"]
        labels = image_config(app["stages"]["build"]["reference"])["Config"]["Labels"]
        assert labels["org.opencontainers.image.base.digest"] == base["image_digest"]
        assert labels["org.opencontainers.image.base.name"] == "factorytest/base:ompi-4.1"
        log = Path(app["log"]).read_text()
        assert f"BASE_IMAGE={base['stages']['build']['reference']}" in log
        assert "@sha256:" in base["stages"]["build"]["reference"]


def test_broken_recipe_fails_its_job_and_skips_its_dependents(built):
    _, jobs, _ = built
    broken = jobs["factorytest/base:broken@amd64"]
    assert broken["reason"].startswith("build: docker build failed:")
    assert "about to fail on purpose" in broken["reason"]  # the last lines of the build
    assert broken["log"] in broken["reason"]
    assert "exit 3" in Path(broken["log"]).read_text()
    dependent = jobs["factorytest/app:on-broken@amd64"]
    assert dependent["reason"] == "needs factorytest/base:broken@amd64, which failed"
    assert dependent["image_digest"] is None


def test_a_base_that_cannot_be_pulled_is_a_plain_failure(built):
    _, jobs, _ = built
    rocky = jobs["factorytest/base:rocky@amd64"]
    assert rocky["reason"].startswith("build: base 127.0.0.1:9/factorytest/absent-os:8 cannot be "
                                      "pulled for amd64: registry 127.0.0.1:9:")
    assert "PIPELINE_MIRRORS=127.0.0.1:9=<mirror host>" in rocky["reason"]
    assert "Traceback" not in rocky["reason"]


def test_rerun_with_nothing_changed_builds_nothing(built, tmp_path):
    _, first, root = built
    code, again = run_pipeline(root / "matrix.yaml", tmp_path / "out", "--select",
                               "factorytest/*:*ompi-4.1@*", "--stages", "build")
    assert code == 0
    for job_id, job in again.items():
        assert job["reason"] == "already built"
        assert job["image_digest"] == first[job_id]["image_digest"]


def test_run_writes_the_summary_contract_and_a_log_per_job(built):
    _, jobs, _ = built
    for job in jobs.values():
        assert set(job) >= {"id", "arch", "result", "reason", "image_digest", "sif", "stages",
                            "log"}
        assert Path(job["log"]).is_file()
    assert len({job["log"] for job in jobs.values()}) == len(jobs)


def test_daemon_not_reachable_is_reported_plainly(tmp_path):
    matrix = write(tmp_path / "c", CATALOGUE, FILES)
    for recipe in ("images/base/debian", "images/base/rocky"):
        shutil.copytree(REPO / recipe, tmp_path / "c" / recipe)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--matrix", str(matrix), "--out",
         str(tmp_path / "out"), "--select", "factorytest/base:ompi-4.1@amd64"],
        capture_output=True, text=True, check=False, cwd=REPO,
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 4  # infrastructure unreachable, not a failed job
    output = done.stdout + done.stderr
    assert "the Docker daemon is not reachable" in output
    assert "python -m pipeline lab up" in output
    assert "Traceback" not in output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["jobs"][0]["reason"].startswith("the Docker daemon is not reachable")
