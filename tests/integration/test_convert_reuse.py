"""SIF reuse is keyed on the build_id *and* the image digest, for real.

One small image (``FROM`` the Debian 12 OS base) goes through build and convert; a second run
reuses its SIF; then staging is made to hold another image under the same build_id (what a
fresh ``PIPELINE_REGISTRY`` gives: the same build_id, built again, another digest), and the
third run must convert again, from that image, and verify (an older factory kept the SIF,
whose labels then did not read back).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from pipeline.tools.apptainer import find
from pipeline.tools.docker_engine import find_build_client
from pipeline.tools.registry.client import Registry
from pipeline.tools.registry.references import split_reference
from pipeline.tools.registry.staging import staging_for
from tests.catalogues import init_repo, lab_catalogue, write
from tests.integration.lab import bring_up, run_pipeline

CATALOGUE = lab_catalogue("factorytest/sifreuse", "factorytest/sifreuse", """\
images:
  - name: plain
    kind: base
    recipe: images/base/plain
    axes: {os: [debian12], arch: [amd64]}
    tag: plain
""")

FILES = {
    "images/base/plain/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
    "images/base/plain/test.sh": "#!/bin/sh\ntest -x /bin/sh\n",
}
JOB = "factorytest/sifreuse:plain@amd64"
STAGES = ("--stages", "build,convert")


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    settings = bring_up()
    root = tmp_path_factory.mktemp("reuse")
    # A build_id of its own, so that no earlier run's staging or SIF is found.
    nonce = {"images/base/plain/.test-run": uuid.uuid4().hex}
    matrix = write(root, CATALOGUE, {**FILES, **nonce})
    (root / ".gitignore").write_text("out/\n")
    init_repo(root)
    yield settings, matrix, root / "out"
    shutil.rmtree(root / "out" / "sif", ignore_errors=True)


def stamp_of(job: dict) -> dict:
    return json.loads(Path(job["sif"] + ".build-id").read_text())


def staging_registry(settings, host: str) -> Registry:
    """A client of the staging registry the run (pr mode) used, with the run's credentials."""
    staging = staging_for("pr", settings.lab_dir, settings.registry, settings.pr_registry)
    assert staging.registry == host, f"the run staged in {host}, not {staging.registry}"
    return staging.client()


def restage_with_another_digest(settings, image: str) -> str:
    """Put another manifest (same image, one annotation more) under the staging tag ``image``
    (``host/repository:tag``); returns its digest."""
    host, repository, tag = split_reference(image)
    registry = staging_registry(settings, host)
    body, media_type, _ = registry.manifest(repository, tag)
    manifest = json.loads(body)
    manifest["annotations"] = {**manifest.get("annotations", {}),
                               "org.sjtuhpc.factory.test.restaged": uuid.uuid4().hex}
    return registry.put_manifest(repository, tag, json.dumps(manifest).encode(), media_type)


def sif_labels(settings, sif: Path) -> dict:
    apptainer = find(settings.lab_dir, find_build_client(settings))
    inspected = apptainer.output(["inspect", "--json", str(sif)], [sif.parent],
                                 unprivileged=True)
    return json.loads(inspected)["data"]["attributes"]["labels"]


def test_a_sif_is_reused_for_the_same_image_and_converted_again_for_another(catalogue):
    settings, matrix, out = catalogue
    code, jobs = run_pipeline(matrix, out, *STAGES)
    first = jobs[JOB]
    assert code == 0, first["reason"]
    assert first["stages"]["convert"]["cached"] is False
    build_id, digest = first["stages"]["build"]["build_id"], first["image_digest"]
    assert stamp_of(first) == {"build_id": build_id, "image_digest": digest}

    # Nothing changed: the SIF is reused.
    code, jobs = run_pipeline(matrix, out, *STAGES)
    again = jobs[JOB]
    assert code == 0, again["reason"]
    assert again["reason"] == "already built; SIF reused"
    assert again["stages"]["convert"]["cached"] is True

    # Staging now holds another image for the same build_id: convert again, from it.
    other = restage_with_another_digest(settings, first["stages"]["build"]["image"])
    assert other != digest
    code, jobs = run_pipeline(matrix, out, *STAGES)
    third = jobs[JOB]
    assert code == 0, third["reason"]
    assert third["stages"]["build"]["build_id"] == build_id
    assert third["stages"]["build"]["cached"] is True and third["image_digest"] == other
    assert third["stages"]["convert"]["cached"] is False
    assert third["reason"] == "already built; converted"
    log = Path(third["log"]).read_text()
    assert f"was not converted from build_id {build_id[:12]} and image {other}" in log
    assert "verified factorytest_sifreuse_plain_amd64.sif" in log
    assert stamp_of(third) == {"build_id": build_id, "image_digest": other}
    labels = sif_labels(settings, Path(third["sif"]))
    assert labels["org.sjtuhpc.factory.image-digest"] == other
    assert labels["org.sjtuhpc.factory.build-id"] == build_id
