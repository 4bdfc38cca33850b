"""main --changed-from: an unchanged job is skipped only when the target has it published."""

from __future__ import annotations

import argparse
import json

import pytest

from pipeline.names import BUILD_ID
from pipeline.planning import planner
from pipeline.settings import Settings
from pipeline.tools.registry.client import RegistryError
from tests.catalogues import init_repo, write

INDEX = "application/vnd.oci.image.index.v1+json"


class StubUpstream:
    """Fixed OS identities: nothing is fetched."""

    def __init__(self, settings):
        self.settings = settings

    def identity(self, variables: dict) -> str:
        return "sha256:" + variables["os"].encode().hex().ljust(64, "0")


class FakeRegistry:
    """Duck-typed target: ``manifest`` answers from ``published`` (repository, tag) -> ids."""

    host = "registry.test"

    def __init__(self, published: dict | None = None):
        self.published = published or {}
        self.asked: list = []

    def manifest(self, repository: str, tag: str):
        self.asked.append((repository, tag))
        arches = self.published.get((repository, tag))
        if arches is None:
            return None
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": "sha256:" + arch.encode().hex().ljust(64, "0"), "size": 1,
             "platform": {"architecture": arch, "os": "linux"},
             "annotations": {BUILD_ID: build_id}} for arch, build_id in arches.items()]}
        return json.dumps(index).encode(), INDEX, "sha256:" + "9" * 64


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    matrix = write(tmp_path / "catalogue")
    init_repo(tmp_path)
    monkeypatch.setattr(planner, "Upstream", StubUpstream)
    for name in ("PIPELINE_REGISTRY_USERNAME", "PIPELINE_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return matrix


def planned(matrix, monkeypatch, registry: FakeRegistry, mode: str = "main", select=None):
    monkeypatch.setattr(planner, "Registry", lambda *args, **kwargs: registry)
    args = argparse.Namespace(matrix=str(matrix), mode=mode, changed_from="HEAD",
                              select=select, target=None)
    settings = Settings.from_env(matrix.parent, {})
    result, _ = planner.planned_for(args, settings)
    return result


def publish_all(ids: dict, jobs, skip_ids=()) -> dict:
    """{(repository, tag): {arch: effective build_id}} for every job but ``skip_ids``."""
    published: dict = {}
    for job in jobs:
        if job.id not in skip_ids:
            published.setdefault((job.repository, job.tag), {})[job.arch] = ids[job.id]
    return published


def test_unchanged_but_never_published_is_built(repo, monkeypatch):
    registry = FakeRegistry()
    result = planned(repo, monkeypatch, registry)
    assert result.jobs and {j.action for j in result.jobs} == {"build"}
    assert {j.reason for j in result.jobs} == {
        "unchanged since HEAD, but not published on local (a failed publish earlier?)"}
    assert registry.asked  # the target was asked, once per tag
    assert len(registry.asked) == len(set(registry.asked))


def test_unchanged_and_published_with_the_same_build_id_is_skipped(repo, monkeypatch):
    first = planned(repo, monkeypatch, FakeRegistry())
    registry = FakeRegistry(publish_all(first.published_ids, first.jobs))
    result = planned(repo, monkeypatch, registry)
    assert {j.action for j in result.jobs} == {"skip"}
    job = next(j for j in result.jobs if j.id == "t/base:deb12@amd64")
    assert job.reason.startswith("unchanged since HEAD; already published as registry.test/"
                                 "t/base:deb12 (amd64 sha256:")


def test_only_the_arch_missing_or_published_with_another_build_id_is_built(repo, monkeypatch):
    first = planned(repo, monkeypatch, FakeRegistry())
    published = publish_all(first.published_ids, first.jobs, skip_ids={"t/base:deb12@arm64"})
    published[("t/base", "deb13")]["amd64"] = "0" * 64  # an older build
    result = {j.id: j for j in planned(repo, monkeypatch, FakeRegistry(published)).jobs}
    built = {i for i, j in result.items() if j.action == "build"}
    assert built == {"t/base:deb12@arm64", "t/base:deb13@amd64"}
    assert result["t/base:deb13@amd64"].reason == (
        "unchanged since HEAD, but not published on local (a failed publish earlier?)")


def test_a_registry_that_cannot_answer_builds_and_says_so(repo, monkeypatch):
    class Down(FakeRegistry):
        def manifest(self, repository, tag):
            raise RegistryError("registry.test: connection refused")

    result = planned(repo, monkeypatch, Down())
    assert {j.action for j in result.jobs} == {"build"}
    assert {j.reason for j in result.jobs} == {
        "unchanged since HEAD, but cannot tell whether it is published: registry.test: "
        "connection refused"}


def test_pr_mode_keeps_skipping_unchanged_jobs_and_asks_no_registry(repo, monkeypatch):
    registry = FakeRegistry()
    result = planned(repo, monkeypatch, registry, mode="pr")
    assert {j.action for j in result.jobs} == {"skip"}
    assert {j.reason for j in result.jobs} == {"unchanged since HEAD"}
    assert registry.asked == []
