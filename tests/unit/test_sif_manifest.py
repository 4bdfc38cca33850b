"""Immutable SIF tags do not move: the same build gives the same manifest, an existing one stays.

An in-memory registry stands in for the target (and the lab's staging area); no Docker.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.catalogue.model import Target
from pipeline.names import BUILD_ID, FACTORY, OCI
from pipeline.run.publishing import Publisher
from pipeline.stages.publish import (
    ArchState,
    PublishContext,
    publish_tag,
    sif_annotations,
    sif_created,
)
from pipeline.tools.credentials import Secrets
from pipeline.tools.git import EPOCH, Source, commit_time
from pipeline.tools.oci_artifacts import OCI_MANIFEST, push_sif
from pipeline.tools.registry.client import RegistryError
from tests.catalogues import commit, git, init_repo

COMMITTED = "2024-02-03T04:05:06Z"
IMAGE_LABEL = "2025-06-07T08:09:10Z"
INDEX = "application/vnd.oci.image.index.v1+json"


def sha(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class FakeRegistry:
    """The part of ``Registry`` the publish steps use, in memory."""

    def __init__(self, host: str = "target.test"):
        self.host = host
        self.blobs: dict = {}  # (repository, digest) -> bytes
        self.manifests: dict = {}  # (repository, tag or digest) -> (body, media type, digest)
        self.puts: list = []  # (repository, reference)

    def has_blob(self, repository, digest):
        return (repository, digest) in self.blobs

    def mount_blob(self, repository, digest, source_repository):
        return False

    def upload_blob(self, repository, digest, path: Path):
        body = Path(path).read_bytes()
        assert sha(body) == digest
        self.blobs[(repository, digest)] = body

    def upload_bytes(self, repository, body: bytes) -> str:
        self.blobs[(repository, sha(body))] = body
        return sha(body)

    def download_blob(self, repository, digest, target: Path):
        Path(target).write_bytes(self.blobs[(repository, digest)])

    def blob_bytes(self, repository, digest):
        return self.blobs[(repository, digest)]

    def put_manifest(self, repository, reference, body: bytes, media_type: str) -> str:
        self.puts.append((repository, reference))
        found = (body, media_type, sha(body))
        self.manifests[(repository, reference)] = found
        self.manifests[(repository, found[2])] = found
        return found[2]

    def manifest(self, repository, reference):
        return self.manifests.get((repository, reference))


@pytest.fixture()
def sif(tmp_path) -> Path:
    path = tmp_path / "r_base_ompi_amd64.sif"
    path.write_bytes(b"SIF_MAGIC" + os.urandom(64))
    return path


ANNOTATIONS = {BUILD_ID: "b" * 64, f"{OCI}.created": COMMITTED}


def test_the_same_sif_twice_gives_the_same_manifest_digest(sif):
    registry = FakeRegistry()
    first = push_sif(registry, "r/base-sif", "ompi-amd64-bbbbbbbbbbbb", sif, ANNOTATIONS)
    again = push_sif(registry, "r/base-sif", "ompi-amd64-bbbbbbbbbbbb", sif, ANNOTATIONS)
    elsewhere = push_sif(FakeRegistry(), "r/base-sif", "ompi-amd64-bbbbbbbbbbbb", sif,
                         dict(reversed(ANNOTATIONS.items())))
    assert first.manifest == again.manifest == elsewhere.manifest
    assert first.sif == sha(sif.read_bytes())
    assert (first.kept, again.kept) == (False, True)
    assert registry.puts == [("r/base-sif", "ompi-amd64-bbbbbbbbbbbb")]


def test_an_existing_immutable_sif_tag_is_not_overwritten(sif, tmp_path):
    registry = FakeRegistry()
    first = push_sif(registry, "r/base-sif", "t-amd64-b", sif, ANNOTATIONS)
    other = tmp_path / "rebuilt.sif"
    other.write_bytes(b"SIF_MAGIC other bytes")
    second = push_sif(registry, "r/base-sif", "t-amd64-b", other,
                      {**ANNOTATIONS, f"{OCI}.created": "2030-01-01T00:00:00Z"})
    assert second == (first.manifest, first.sif, True)
    assert registry.manifest("r/base-sif", "t-amd64-b")[2] == first.manifest
    assert ("r/base-sif", sha(other.read_bytes())) not in registry.blobs
    assert len(registry.puts) == 1


def test_a_tag_holding_something_else_is_an_error(sif):
    registry = FakeRegistry()
    registry.put_manifest("r/base-sif", "t-amd64-b", b'{"manifests":[]}', INDEX)
    with pytest.raises(RegistryError, match="not a SIF; it is not overwritten"):
        push_sif(registry, "r/base-sif", "t-amd64-b", sif, ANNOTATIONS)


def staged_image(staging: FakeRegistry, label: str | None) -> str:
    """An amd64 image in staging; returns its manifest digest."""
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Labels": {f"{OCI}.created": label} if label else {}}}
    config_digest = staging.upload_bytes("factory-staging/r/base", json.dumps(config).encode())
    layer = staging.upload_bytes("factory-staging/r/base", b"layer")
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": config_digest, "size": 1},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                   "digest": layer, "size": 5}]}).encode()
    staging.put_manifest("factory-staging/r/base", sha(body), body, OCI_MANIFEST)
    return sha(body)


def publish(tmp_path, sif: Path, created: str, label: str | None = IMAGE_LABEL):
    staging, target = FakeRegistry("staging.test"), FakeRegistry()
    digest = staged_image(staging, label)
    state = ArchState("amd64", "r/base:ompi@amd64", "b" * 64, digest, "factory-staging/r/base",
                      sif)
    ctx = PublishContext("local", staging, target, Secrets.from_env({}), None, None, None,
                         tmp_path, "0123abc", created)
    result = publish_tag("r/base", "ompi", [state], ctx, lambda line: None)
    assert result["result"] == "published"
    sif_body = target.manifest("r/base-sif", "ompi-amd64-bbbbbbbbbbbb")
    index_body = target.manifest("r/base", "ompi")
    return json.loads(sif_body[0]), sif_body[2], json.loads(index_body[0]), index_body[2]


def test_sif_annotations_hold_the_commit_time_and_no_wall_clock(tmp_path, sif):
    manifest, digest, index, index_digest = publish(tmp_path, sif, COMMITTED)
    assert manifest["annotations"] == {BUILD_ID: "b" * 64, f"{FACTORY}.id": "r/base:ompi@amd64",
                                       f"{OCI}.created": COMMITTED, f"{OCI}.revision": "0123abc"}
    assert index["annotations"][f"{OCI}.created"] == COMMITTED
    # A rerun (another target, later) writes the very same manifests.
    assert publish(tmp_path, sif, COMMITTED)[1::2] == (digest, index_digest)


def test_without_a_commit_time_the_sif_takes_its_image_label_or_the_epoch(tmp_path, sif):
    assert publish(tmp_path, sif, EPOCH)[0]["annotations"][f"{OCI}.created"] == IMAGE_LABEL
    assert publish(tmp_path, sif, EPOCH, label=None)[0]["annotations"][f"{OCI}.created"] == EPOCH
    ctx = SimpleNamespace(created=COMMITTED)
    assert sif_created(ctx, lambda: pytest.fail("the image is not asked")) == COMMITTED
    state = ArchState("amd64", "x@amd64", "b" * 64)
    assert set(sif_annotations(state, "rev", COMMITTED).values()) == {
        "b" * 64, "x@amd64", "rev", COMMITTED}


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2024-02-03T05:05:06+01:00")
    (tmp_path / "file").write_text("x\n")
    init_repo(tmp_path)
    return tmp_path


def test_commit_time_is_the_committer_time_in_utc(repo):
    head = git(repo, "rev-parse", "HEAD").strip()
    assert commit_time(repo, head) == COMMITTED
    assert commit_time(repo, head + "-dirty") == EPOCH
    assert commit_time(repo, "unknown") == EPOCH
    assert commit_time(repo, "f" * 40) == EPOCH
    assert commit_time(repo / "..", head) in (COMMITTED, EPOCH)  # outside: never an error
    commit(repo, "later")  # same committer date: same time, whatever the clock says
    assert commit_time(repo, git(repo, "rev-parse", "HEAD").strip()) == COMMITTED


def test_the_run_publishes_with_the_commit_time(repo, tmp_path):
    head = git(repo, "rev-parse", "HEAD").strip()
    run = SimpleNamespace(settings=SimpleNamespace(registry="127.0.0.1:5000", lab_dir=tmp_path),
                          target=Target("local", "127.0.0.1:5000", None, None),
                          secrets=Secrets.from_env({}))
    context = SimpleNamespace(apptainer=None, scratch=tmp_path, catalogue_dir=repo,
                              source=Source("file://x", head))
    assert Publisher(run, context)._context().created == COMMITTED
