"""A definition-file recipe (``recipe.def``) through every stage, for real.

The shipped example, ``images/app/pi-mpi`` (two stages: compile with mpicc on the Open MPI
base, then a runtime stage without compilers, ``%files from build``), is copied into a
small catalogue on a Debian 12 Open MPI 4.1 base, its ``From:`` lines renamed to the
test's base repository, and run in ``main`` mode, amd64 only (arm64 is the same code under
QEMU; with its base built under QEMU too it does not fit the suite's time).  The app's
namespace is new on every run, so it is built and published each time; the base's is
fixed, so a rerun finds it in staging.

What must hold: Apptainer built the SIF FROM the staged base *by digest* (the SIF's own
definition file says so), its ``%test`` ran the code on 2 ranks, and the tag was published
as SIF artifacts only: the SIF tags hold the tested SIF's bytes, and no image or index is
pretended under the tag.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from pipeline.tools.apptainer import find
from pipeline.tools.digests import sha256_file
from pipeline.tools.docker_engine import find_build_client
from pipeline.tools.oci_artifacts import SIF_LAYER
from tests.catalogues import init_repo, lab_catalogue, write
from tests.integration.lab import REPO, bring_up, run_pipeline, trusted

BASE_REPO = "factorytest/def-base"
APP_RECIPE = "images/app/pi-mpi"


def catalogue(app_repo: str) -> str:
    return lab_catalogue(BASE_REPO, app_repo, """\
    images:
      - name: base
        kind: base
        recipe: images/base/debian
        axes: {os: [debian12], mpi: [ompi-4.1], arch: [amd64]}
      - name: pi-mpi
        kind: app
        recipe: images/app/pi-mpi
        axes: {os: [debian12], arch: [amd64]}
        include: [{mpi: ompi-4.1, version: "1.0"}]
        tag: "pi-mpi-{version}"
    """)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    settings = bring_up()
    root = tmp_path_factory.mktemp("definition")
    app_repo = f"factorytest-{uuid.uuid4().hex[:8]}/def-app"
    shutil.copytree(REPO / "images/base/debian", root / "images/base/debian")
    shutil.copytree(REPO / APP_RECIPE, root / APP_RECIPE)
    recipe = root / APP_RECIPE / "recipe.def"
    recipe.write_text(recipe.read_text().replace("sjtuhpc/hpc-base-container:", f"{BASE_REPO}:"))
    matrix = write(root, catalogue(app_repo))
    (root / ".gitignore").write_text("out/\n")
    init_repo(root)
    code, jobs = run_pipeline(matrix, root / "out", "--mode", "main", "-j", "2")
    summary = json.loads((root / "out/summary.json").read_text())
    return {"code": code, "jobs": jobs, "summary": summary, "app": app_repo,
            "base": jobs[f"{BASE_REPO}:ompi-4.1@amd64"],
            "job": jobs[f"{app_repo}:pi-mpi-1.0@amd64"], "settings": settings}


def test_it_builds_and_its_test_runs_the_code_on_two_ranks(ran):
    job = ran["job"]
    assert ran["code"] == 0, job["reason"]
    assert job["result"] == "passed", job["reason"]
    assert job["stages"]["build"]["sif"] == job["sif"]  # apptainer built it: nothing converted
    [test] = [t for t in job["stages"]["test"]["tests"] if t["name"] == "%test"]
    assert test["result"] == "passed"
    assert test["reason"].startswith("workload: pi-mpi: 2 ranks, intervals 10000000 pi 3.14159265")


def test_the_sif_was_built_from_the_staged_base_by_digest(ran):
    settings, job, base = ran["settings"], ran["job"], ran["base"]
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


def test_the_tag_is_published_as_the_tested_sif_and_nothing_else(ran):
    app, job = ran["app"], ran["job"]
    registry = trusted()
    [publication] = [p for p in ran["summary"]["publications"] if p["repository"] == app]
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
