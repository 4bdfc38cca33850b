"""recipe.def jobs without Docker or Apptainer: how From: is pinned, what the factory adds
to the definition file, how the build runs, and how a SIF-only tag is published."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.names import BUILD_ID
from pipeline.planning.already_published import mark_published
from pipeline.planning.jobs import Job
from pipeline.stages.build_definition import build_argv, pin_sources, with_factory_sections
from pipeline.stages.built import BuildFailed, Built
from pipeline.stages.checks.percent_test import missing
from pipeline.stages.definition import section_headers
from pipeline.stages.publish import ArchState, PublishContext, PublishRefused, publish_tag
from pipeline.tools.apptainer import Apptainer, Scratch
from pipeline.tools.credentials import Secrets

RECIPE = """\
# a comment before the first stage
Bootstrap: docker
From: sjtuhpc/hpc-base-container:ompi-4.1
Stage: build

%post
    make

Bootstrap: docker
From: debian:12
Stage: tools

Bootstrap: docker
From: sjtuhpc/hpc-base-container:ompi-4.1
Stage: runtime

%files from build
    /opt/x /opt/x

%test
    true
"""
NEED = "sjtuhpc/hpc-base-container:ompi-4.1@amd64"
SOURCES = ((3, "need", NEED), (10, "public", "debian:12"), (14, "need", NEED))
LAYOUT = "/scratch/job/sha256-" + "ab" * 32


def job(arch: str = "amd64", **changes) -> Job:
    made = Job(id=f"r/app:pi-1.0@{arch}", image="pi", kind="app", repository="r/app",
               tag="pi-1.0", arch=arch, variables={"os": "debian12", "arch": arch},
               recipe="images/app/pi", needs=(f"r/base:ompi@{arch}",), build_id="b" * 64,
               recipe_file="recipe.def")
    return replace(made, **changes)


def test_each_need_stage_is_pinned_to_the_staged_layout_and_public_ones_stay():
    pinned = pin_sources(RECIPE, SOURCES, {NEED: LAYOUT}).split("\n")
    assert pinned[1:3] == ["Bootstrap: oci", f"From: {LAYOUT}"]
    assert pinned[12:14] == ["Bootstrap: oci", f"From: {LAYOUT}"]
    assert pinned[8:10] == ["Bootstrap: docker", "From: debian:12"]  # public: as written
    assert "sjtuhpc/hpc-base-container:ompi-4.1" not in "\n".join(pinned)  # no moving tag
    # Everything else is the recipe's, line for line.
    assert [a for a, b in zip(pinned, RECIPE.split("\n"), strict=True) if a != b] == [
        "Bootstrap: oci", f"From: {LAYOUT}", "Bootstrap: oci", f"From: {LAYOUT}"]


def test_a_from_line_that_moved_since_the_plan_is_refused():
    with pytest.raises(BuildFailed, match="line 4 is not the From: line"):
        pin_sources(RECIPE, ((4, "need", NEED),), {NEED: LAYOUT})


def test_the_factory_labels_go_to_the_last_stage_and_cannot_open_a_section():
    labels = {BUILD_ID: "b" * 64, "org.sjtuhpc.factory.var.os": "x\n%post\n  touch /pwned"}
    text = with_factory_sections(RECIPE, job(), labels, "pi\n%setup")
    last = text[text.rindex("Bootstrap:"):]
    assert section_headers(last) == ["%files", "%test", "%labels", "%help"]
    assert f"    {BUILD_ID} {'b' * 64}" in last
    assert "x\\n%post\\n  touch /pwned" in last  # escaped onto its line
    assert section_headers(text).count("%post") == 1  # the recipe's own, no other


def test_a_recipe_with_its_own_help_keeps_it():
    text = with_factory_sections(RECIPE + "\n%help\n    mine\n", job(), {BUILD_ID: "b"}, "")
    assert section_headers(text).count("%help") == 1
    assert "    mine" in text


def test_the_build_runs_unprivileged_without_socket_or_credentials(tmp_path):
    runtime = Apptainer("container", "apptainer", "factory/apptainer:x", "/usr/bin/docker",
                        "1.4")
    argv = build_argv(runtime, ["build", "--fakeroot", "out.sif", "recipe.def"],
                      Path("/r/images/app/pi"), Scratch(tmp_path / "tmp", 0, "on disk"))
    joined = " ".join(argv)
    assert "docker.sock" not in joined
    assert "-v /r/images/app/pi:/r/images/app/pi:ro" in joined  # the recipe, read-only
    assert "-w /r/images/app/pi" in joined  # %files paths are relative to it
    assert "--reuid=1000" in joined and "--clear-groups" in joined
    names = [argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv) if a == "-e"]
    assert set(names) == {"APPTAINER_TMPDIR", "HOME"}  # no login, no key
    assert "--privileged" not in argv
    assert f"APPTAINER_TMPDIR={tmp_path / 'tmp'}" in argv
    in_memory = build_argv(runtime, ["build"], Path("/r"), Scratch(tmp_path / "tmp", 2**30, "m"))
    assert "APPTAINER_TMPDIR=/scratch" in in_memory and "/scratch:exec,size=1073741824" in in_memory


class MemoryRegistry:
    """Just enough of ``Registry`` for pushing SIFs: manifests by tag and digest, blobs."""

    host = "reg.test"

    def __init__(self):
        self.manifests: dict = {}  # (repository, reference) -> (body, media type, digest)
        self.blobs: dict = {}

    def manifest(self, repository, reference):
        return self.manifests.get((repository, reference))

    def put_manifest(self, repository, reference, body, media_type):
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        for ref in (reference, digest):
            self.manifests[(repository, ref)] = (body, media_type, digest)
        return digest

    def has_blob(self, repository, digest):
        return (repository, digest) in self.blobs

    def upload_blob(self, repository, digest, path):
        self.blobs[(repository, digest)] = Path(path).read_bytes()

    def upload_bytes(self, repository, body):
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.blobs[(repository, digest)] = body
        return digest


def _context(registry) -> PublishContext:
    return PublishContext("local", registry, registry, Secrets.from_env({}), None, None, None,
                          Path("/tmp"),
                          "rev", "2026-01-01T00:00:00Z")


def _states(tmp_path) -> list:
    states = []
    for arch in ("amd64", "arm64"):
        sif = tmp_path / f"{arch}.sif"
        sif.write_bytes(arch.encode() * 100)
        states.append(ArchState(arch, f"r/app:pi-1.0@{arch}", f"{arch[:1]}" * 64,
                                "sha256:" + "0" * 64, "factory-staging/r/app", sif,
                                sif_only=True))
    return states


def test_a_sif_only_tag_publishes_each_arch_s_sif_and_no_image_index(tmp_path):
    registry = MemoryRegistry()
    result = publish_tag("r/app", "pi-1.0", _states(tmp_path), _context(registry), print)
    assert result["result"] == "published"
    assert registry.manifest("r/app", "pi-1.0") is None  # nothing pretends to be an image
    for arch in ("amd64", "arm64"):
        moving = registry.manifest("r/app-sif", f"pi-1.0-{arch}")
        immutable = registry.manifest("r/app-sif", f"pi-1.0-{arch}-{arch[:1] * 12}")
        assert moving is not None and moving == immutable
        layer = (tmp_path / f"{arch}.sif").read_bytes()
        assert registry.blobs[("r/app-sif", "sha256:" + hashlib.sha256(layer).hexdigest())] \
            == layer
    # Published: the nightly plan skips both arches, reading the SIF tags' build_ids.
    jobs = [job(arch, build_id=f"{arch[:1]}" * 64) for arch in ("amd64", "arm64")]
    marked = mark_published(jobs, registry, {j.id: j.build_id for j in jobs}, {})
    assert [(j.action, j.reason.split(" (")[0]) for j in marked] == [
        ("skip", f"already published as reg.test/r/app-sif:pi-1.0-{arch}")
        for arch in ("amd64", "arm64")]
    again = publish_tag("r/app", "pi-1.0", _states(tmp_path), _context(registry), print)
    assert again["result"] == "already published"


def test_a_sif_only_tag_is_refused_when_an_arch_did_not_pass(tmp_path):
    registry = MemoryRegistry()
    states = _states(tmp_path)
    states[1] = replace(states[1], digest=None, sif=None, missing="failed (build: boom)")
    with pytest.raises(PublishRefused, match="arm64 failed"):
        publish_tag("r/app", "pi-1.0", states, _context(registry), print)
    assert registry.manifests == {}


def test_a_staged_sif_and_a_staged_image_name_their_staging_repository_alike():
    image = Built("h:5000/factory-staging/r/app:t", "h:5000/factory-staging/r/app@sha256:aa",
                  "sha256:aa", "b", "base", "sha256:bb", False)
    sif = replace(image, tagged="oras://" + image.tagged, reference="oras://" + image.reference,
                  sif=Path("x.sif"))
    assert image.staging_repository == sif.staging_repository == "factory-staging/r/app"
    assert sif.sif_only and not image.sif_only
    assert sif.to_json()["sif"] == "x.sif" and "sif" not in image.to_json()


def test_a_definition_files_own_test_section_is_its_test(tmp_path):
    def job(recipe_file):
        return SimpleNamespace(recipe="images/app/x", recipe_file=recipe_file)

    (tmp_path / "recipe.def").write_text("Bootstrap: docker\nFrom: a/b:1\n%test\n    true\n")
    assert missing(job("recipe.def"), tmp_path) is None
    (tmp_path / "recipe.def").write_text("Bootstrap: docker\nFrom: a/b:1\n%post\n    true\n")
    assert missing(job("recipe.def"), tmp_path) == (
        "the recipe images/app/x/recipe.def has no %test section")
    # A Dockerfile recipe's test is its test.sh, whatever else lies beside it.
    assert missing(job("Dockerfile"), tmp_path) == "the recipe images/app/x has no test.sh"
