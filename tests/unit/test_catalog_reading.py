"""The catalogue read back from a registry: what the publish stage pushed is what it lists.

The real publish stage (``publish_tag``) pushes into an in-process registry that follows the
OCI distribution protocol and Docker Hub's token flow (``tests/fakes/docker_hub.py``, pages
of tags included); ``python -m pipeline catalog``'s reader then reads it through the real
``Registry`` client.  No Docker, no network.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.catalogue.model import Target
from pipeline.errors import InputError
from pipeline.names import BUILD_ID, FACTORY, OCI
from pipeline.planning.jobs import Job
from pipeline.published.artifact import pull_catalog, push_catalog
from pipeline.published.catalog import (
    CATALOG,
    CHECKSUM,
    Scope,
    build_catalog,
    catalog_bytes,
    catalog_problems,
    write_catalog,
)
from pipeline.stages.labels import image_labels
from pipeline.stages.publish import ArchState, PublishContext, Record, publish_tag
from pipeline.tools.credentials import Secrets
from pipeline.tools.git import Source
from pipeline.tools.oci_artifacts import OCI_MANIFEST, make_index
from pipeline.tools.registry.client import Credentials, Registry
from pipeline.tools.registry.retries import RetryPolicy
from tests.fakes.docker_hub import FakeDockerHub
from tests.fakes.faulty_proxy import FaultyProxy

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "catalog-sample.json"
COMMITTED = "2026-11-30T12:00:00Z"
SOURCE = Source("https://github.com/sjtuhpc/hpc-container-factory", "13e35ab" + "0" * 33)
STAGING = "factory-staging"
FAST = RetryPolicy(attempts=4, total_seconds=20, max_backoff=0.05)
TESTS = ({"name": "%test", "result": "passed", "reason": "workload: melt energy -6.77"},
         {"name": "mpi-hybrid", "result": "skipped", "reason": "host Open MPI 5.0 cannot "
          "launch the container's Open MPI 4.1: different major version"})


@pytest.fixture(scope="module")
def hub():
    with FakeDockerHub(users={"robot": "pw"}, writable=("t", STAGING), tags_page=3) as hub:
        yield hub


def client(address: str, password: str = "pw") -> Registry:
    return Registry(address, Credentials("robot", password), FAST)


def scope(hub, repositories=("t/app", "t/base")) -> Scope:
    return Scope(Target("local", hub.address, None, None), tuple(repositories),
                 {"t/app": "app", "t/base": "base"})


def job(repository: str, tag: str, arch: str, name: str, kind: str, **variables) -> Job:
    cell = {"os": "debian12", "gcc": "12", "mpi": "ompi-4.1", "mpi_family": "openmpi",
            "mpi_version": "4.1", "cuda": "none", "arch": arch,
            "arch_platform": f"linux/{arch}", **variables}
    return Job(id=f"{repository}:{tag}@{arch}", image=name, kind=kind, repository=repository,
               tag=tag, arch=arch, variables=cell, recipe=f"images/{kind}", needs=(),
               build_id=hashlib.sha256(f"{repository}:{tag}@{arch}".encode()).hexdigest())


def stage_image(registry: Registry, planned: Job, base: tuple) -> str:
    """A built image of ``planned`` in staging, labelled as the build stage labels it."""
    labels = image_labels(planned, planned.build_id, *base, SOURCE)
    labels[f"{OCI}.created"] = COMMITTED
    config = json.dumps({"architecture": planned.arch, "os": "linux",
                         "config": {"Labels": labels}}, sort_keys=True).encode()
    repository = f"{STAGING}/{planned.repository}"
    layer = registry.upload_bytes(repository, f"layer of {planned.id}".encode())
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": registry.upload_bytes(repository, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer,
                    "size": len(f"layer of {planned.id}")}]}).encode()
    return registry.put_manifest(repository, "sha256:" + hashlib.sha256(body).hexdigest(),
                                 body, OCI_MANIFEST)


@dataclass(frozen=True)
class About:
    """What the publisher records of a tag beside its tests."""

    description: str = ""
    commands: tuple = ()
    base: tuple = ("factory/os:debian12", "sha256:" + "3" * 64)

    def record(self, planned: Job) -> Record:
        return Record(planned.image, planned.kind, self.description, self.commands, TESTS,
                      dict(planned.variables), *self.base, SOURCE.url)


def publish(registry: Registry, tmp_path: Path, jobs: list[Job], about: About, *,
            sif_only: bool = False, without_sif: tuple = ()) -> dict:
    """Publish one tag (``jobs``: its arches) with the real publish stage."""
    states = []
    for planned in jobs:
        sif = tmp_path / f"{planned.tag}-{planned.arch}.sif"
        sif.write_bytes(f"SIF of {planned.id}".encode() * 50)
        digest = ("sha256:" + "0" * 64 if sif_only
                  else stage_image(registry, planned, about.base))
        states.append(ArchState(planned.arch, planned.id, planned.build_id, digest,
                                f"{STAGING}/{planned.repository}",
                                None if planned.arch in without_sif else sif,
                                sif_only=sif_only, record=about.record(planned)))
    ctx = PublishContext("local", registry, registry, Secrets.from_env({}), None, None, None,
                         tmp_path, SOURCE.revision, COMMITTED)
    return publish_tag(jobs[0].repository, jobs[0].tag, states, ctx, lambda line: None)


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sifs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sifs")


@pytest.fixture(scope="module")
def published(hub, sifs) -> Registry:
    """A base tag (both arches, arm64 without a SIF), an app tag on it, and a SIF-only tag;
    published once for the module (the tests that add tags add none the catalogue lists)."""
    registry = client(hub.address)
    base = [job("t/base", "ompi-4.1", arch, "base", "base") for arch in ("amd64", "arm64")]
    publish(registry, sifs, base, About("Debian with an MPI"), without_sif=("arm64",))
    on_base = ("t/base:ompi-4.1", registry.digest("t/base", "ompi-4.1"))
    app = [job("t/app", "lammps-gnu-2022", arch, "lammps", "app", version="2022")
           for arch in ("amd64", "arm64")]
    publish(registry, sifs, app, About("LAMMPS", ("lmp",), on_base))
    pi = [job("t/app", "pi-mpi-1.0", "amd64", "pi-mpi", "app", version="1.0")]
    publish(registry, sifs, pi, About(commands=("pi-mpi",), base=on_base), sif_only=True)
    return registry


def by_tag(catalog: dict) -> dict:
    return {(i["repository"], i["tag"]): i for i in catalog["images"]}


def test_the_catalogue_lists_exactly_the_moving_tags_as_published(hub, published, sifs):
    catalog = build_catalog(published, scope(hub))
    images = by_tag(catalog)
    # The immutable tags are there in the registry, but only referenced from the moving ones.
    assert any(t.startswith("ompi-4.1-") for t in published.tags("t/base"))
    assert list(images) == [("t/app", "lammps-gnu-2022"), ("t/app", "pi-mpi-1.0"),
                            ("t/base", "ompi-4.1")]
    base = images[("t/base", "ompi-4.1")]
    index = json.loads(published.manifest("t/base", "ompi-4.1")[0])
    publication = index["annotations"][f"{FACTORY}.publication"]
    assert base["digest"] == published.digest("t/base", "ompi-4.1")
    assert base["immutable"] == f"{hub.address}/t/base:ompi-4.1-{publication}"
    assert base["reference"] == f"{hub.address}/t/base:ompi-4.1"
    assert (base["name"], base["kind"], base["module"]) == (
        "base", "base", "base/ompi-4.1")
    assert base["description"] == "Debian with an MPI"
    assert base["commands"] == []  # as recorded: the publisher gave none
    assert base["variables"] == {"os": "debian12", "gcc": "12", "mpi": "ompi-4.1",
                                 "mpi_family": "openmpi", "mpi_version": "4.1", "cuda": "none"}
    assert base["source"] == {"url": SOURCE.url, "revision": SOURCE.revision}
    assert (base["created"], base["base"]) == (COMMITTED, "factory/os:debian12")
    amd64 = base["arches"]["amd64"]
    descriptor = {d["platform"]["architecture"]: d for d in index["manifests"]}
    assert amd64["manifest"] == descriptor["amd64"]["digest"]
    assert amd64["platform"] == "linux/amd64"
    assert amd64["build_id"] == descriptor["amd64"]["annotations"][BUILD_ID]
    assert amd64["base_digest"] == "sha256:" + "3" * 64
    assert amd64["tests"] == list(TESTS)
    sif = amd64["sif"]
    blob = sha256_of(sifs / "ompi-4.1-amd64.sif")
    assert sif == {
        "repository": "t/base-sif",
        "reference": f"oras://{hub.address}/t/base-sif:ompi-4.1-amd64",
        "immutable": f"oras://{hub.address}/t/base-sif:ompi-4.1-amd64-{amd64['build_id'][:12]}",
        "manifest": published.digest("t/base-sif", "ompi-4.1-amd64"), "blob": blob,
        "size": (sifs / "ompi-4.1-amd64.sif").stat().st_size, "signed": False}
    assert amd64["sif_missing"] is None


def test_an_arch_without_a_sif_says_so(hub, published):
    arm64 = by_tag(build_catalog(published, scope(hub)))[("t/base", "ompi-4.1")]["arches"][
        "arm64"]
    assert arm64["manifest"] and arm64["sif"] is None
    assert arm64["sif_missing"] == (f"no SIF is published for arm64 (oras://{hub.address}/"
                                    "t/base-sif:ompi-4.1-arm64 does not exist)")


def test_an_app_tag_names_its_base_commands_and_module(hub, published):
    app = by_tag(build_catalog(published, scope(hub)))[("t/app", "lammps-gnu-2022")]
    assert (app["name"], app["kind"], app["module"], app["commands"]) == (
        "lammps", "app", "lammps/gnu-2022", ["lmp"])
    assert app["base"] == "t/base:ompi-4.1"
    assert app["arches"]["arm64"]["base_digest"] == published.digest("t/base", "ompi-4.1")
    assert app["variables"]["version"] == "2022"


def test_a_sif_only_tag_is_read_from_its_sif_manifests(hub, published, sifs):
    pi = by_tag(build_catalog(published, scope(hub)))[("t/app", "pi-mpi-1.0")]
    assert published.manifest("t/app", "pi-mpi-1.0") is None  # no image under the tag
    assert (pi["reference"], pi["digest"], pi["immutable"]) == (None, None, None)
    assert (pi["name"], pi["module"], pi["commands"]) == ("pi-mpi", "pi-mpi/1.0", ["pi-mpi"])
    assert pi["variables"]["version"] == "1.0" and "arch" not in pi["variables"]
    assert (pi["base"], pi["created"]) == ("t/base:ompi-4.1", COMMITTED)
    assert pi["source"] == {"url": SOURCE.url, "revision": SOURCE.revision}
    assert list(pi["arches"]) == ["amd64"]
    amd64 = pi["arches"]["amd64"]
    assert (amd64["platform"], amd64["manifest"], amd64["tests"]) == (
        "linux/amd64", None, list(TESTS))
    assert amd64["sif"]["blob"] == sha256_of(sifs / "pi-mpi-1.0-amd64.sif")


def test_what_is_not_a_published_moving_tag_is_left_out(hub, published):
    registry = published
    # An index whose version annotation names another tag (a copy under a new name), and a
    # plain image manifest: neither is a tag this factory published.
    body, media_type, _ = registry.manifest("t/base", "ompi-4.1")
    registry.put_manifest("t/base", "copied", body, media_type)
    single = json.loads(body)["manifests"][0]["digest"]
    image, image_type, _ = registry.manifest("t/base", single)
    registry.put_manifest("t/base", "plain", image, image_type)
    stray = make_index([], {f"{OCI}.version": "stray"})
    registry.put_manifest("t/other", "stray", stray, "application/vnd.oci.image.index.v1+json")
    catalog = build_catalog(registry, scope(hub, ("t/app", "t/base", "t/other")))
    assert [i["tag"] for i in catalog["images"]] == ["lammps-gnu-2022", "pi-mpi-1.0",
                                                     "ompi-4.1", "stray"]
    assert catalog["images"][-1]["arches"] == {}  # listed, with what it holds: nothing


def test_tag_lists_are_read_page_by_page(hub, published):
    for n in range(8):  # three pages of three
        published.put_manifest("t/paged", f"p{n}", make_index([], {f"{OCI}.version": f"p{n}"}),
                               "application/vnd.oci.image.index.v1+json")
    seen = len(hub.requests)
    assert published.tags("t/paged") == [f"p{n}" for n in range(8)]
    pages = [s for s in hub.requests[seen:] if "/v2/t/paged/tags/list" in s.path]
    assert [s.status for s in pages] == [200, 200, 200]
    catalog = build_catalog(published, scope(hub, ("t/paged",)))
    assert [i["tag"] for i in catalog["images"]] == [f"p{n}" for n in range(8)]


def test_a_registry_answering_503_is_asked_again(hub, published):
    schedule = [(lambda method, path: "/tags/list" in path, "503", 2),
                (lambda method, path: "/manifests/" in path, "503", 1)]
    with FaultyProxy(hub.address, schedule) as proxy:
        catalog = build_catalog(client(proxy.address), scope(hub))
        assert [fault for fault, *_ in proxy.faults] == ["503", "503", "503"]
    expected = build_catalog(published, scope(hub))
    assert catalog_bytes(catalog).replace(proxy.address.encode(), hub.address.encode()) \
        == catalog_bytes(expected)


def test_the_same_registry_gives_the_same_bytes_and_a_valid_document(hub, published,
                                                                       tmp_path):
    first = write_catalog(build_catalog(published, scope(hub)), tmp_path / "one")
    second = write_catalog(build_catalog(published, scope(hub)), tmp_path / "two")
    assert [p.name for p in first] == [CATALOG, CHECKSUM]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    body = first[0].read_bytes()
    assert first[1].read_text() == f"{hashlib.sha256(body).hexdigest()}  {CATALOG}\n"
    assert body.endswith(b"}\n") and json.loads(body)["catalog"] == f"{hub.address}/t/catalog"
    assert catalog_problems(json.loads(body)) == []


def test_the_sample_is_valid_and_a_broken_document_is_not():
    sample = json.loads(SAMPLE.read_text())
    assert catalog_problems(sample) == []
    sample["images"][0]["arches"]["amd64"]["sif"]["blob"] = "md5:abc"
    del sample["images"][1]["module"]
    problems = catalog_problems(sample)
    assert any(p.startswith("images[0].arches.amd64.sif.blob:") for p in problems)
    assert any(p.startswith("images[1]:") and "'module'" in p for p in problems)


def test_the_catalogue_is_pushed_once_and_pulled_back_byte_for_byte(hub, published):
    body = catalog_bytes(build_catalog(published, scope(hub)))
    first = push_catalog(published, "t/catalog", body)
    assert first.changed and first.latest == f"{hub.address}/t/catalog:latest"
    assert pull_catalog(published, first.latest) == body
    assert pull_catalog(published, f"oras://{hub.address}/t/catalog@{first.manifest}") == body
    again = push_catalog(published, "t/catalog", body)
    assert (again.changed, again.manifest, again.immutable) == (
        False, first.manifest, first.immutable)
    manifest = json.loads(published.manifest("t/catalog", "latest")[0])
    assert manifest["artifactType"] == "application/vnd.sjtuhpc.factory.catalog.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert manifest["layers"][0]["annotations"] == {f"{OCI}.title": "catalog.json"}
    other = push_catalog(published, "t/catalog", body.replace(b"lammps", b"LAMMPS"))
    assert other.changed and other.immutable != first.immutable
    assert pull_catalog(published, first.immutable) == body  # immutable: still the first


def test_repositories_in_two_namespaces_have_no_place_for_the_catalogue(hub, published):
    with pytest.raises(InputError, match="one namespace; these are in a, t"):
        build_catalog(published, scope(hub, ("t/base", "a/app")))
