"""The published catalogue, read from the lab's real registry after a real main run.

The run is the one the app and cluster tests share (``apps_run.py``: base cells, LAMMPS, a
definition-file app published as SIFs only, two images that fail their tests and are not
published), in repositories of its own.  The run refreshed ``out/site/`` and pushed
``catalog.json`` after publishing; ``catalog`` then reads the registry again: it lists
exactly the tags the run published, with the digests and tests the run recorded, and a
second reading gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest

from pipeline.published import command
from pipeline.published.artifact import pull_catalog
from pipeline.published.catalog import catalog_problems
from pipeline.tools.credentials import Masker
from tests.integration.lab import REPO, trusted


@pytest.fixture(scope="module")
def ran(apps_run):
    return apps_run


def catalog(*argv: str) -> int:
    """``python -m pipeline catalog ARGV`` in this process."""
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["catalog", *argv])
    return args.func(args, Masker.from_env(), None)


@pytest.fixture(scope="module")
def read(ran, tmp_path_factory):
    """``catalog`` run twice on the run's matrix.yaml, into two folders."""
    folders = [tmp_path_factory.mktemp("catalog") for _ in range(2)]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)  # the lab's folder (.lab) is found from here, as a user's is
        codes = [catalog("--matrix", str(ran["matrix"]), "--out", str(f)) for f in folders]
    assert codes == [0, 0]
    bodies = [(f / "catalog.json").read_bytes() for f in folders]
    return {"folders": folders, "bodies": bodies, "data": json.loads(bodies[0])}


def published_tags(ran) -> set:
    return {(p["repository"], p["tag"]) for p in ran["summary"]["publications"]
            if p["result"] == "published" and not p["repository"].endswith("/catalog")}


def test_catalog_lists_exactly_the_published_tags(ran, read):
    data = read["data"]
    assert catalog_problems(data) == []
    listed = {(i["repository"], i["tag"]) for i in data["images"]}
    assert listed == published_tags(ran)
    assert (ran["base"], "cuda-broken") not in listed  # failed its test: not published
    assert data["repositories"] == sorted([ran["app"], ran["base"]])


def test_each_arch_has_the_run_s_digests_and_tests(ran, read):
    images = {(i["repository"], i["tag"]): i for i in read["data"]["images"]}
    for key in ("ompi", "plain", "fake", "lammps-real", "pi"):
        job = ran["jobs"][key]
        repository, tag = job["id"].rsplit("@", 1)[0].split(":")
        arch = images[(repository, tag)]["arches"]["amd64"]
        assert arch["build_id"] == job["stages"]["build"]["build_id"]
        assert arch["tests"] == [{k: t[k] for k in ("name", "result", "reason")}
                                 for t in job["stages"]["test"]["tests"]]
        assert arch["sif"]["blob"] == "sha256:" + hashlib.sha256(
            Path(job["sif"]).read_bytes()).hexdigest()
        assert arch["sif"]["size"] == Path(job["sif"]).stat().st_size
        if key == "pi":  # built from a recipe.def: SIFs only
            assert arch["manifest"] is None and images[(repository, tag)]["reference"] is None
        else:
            assert arch["manifest"] == job["image_digest"]
    lammps = images[(ran["app"], "lammps-gnu-2022")]
    assert (lammps["name"], lammps["kind"], lammps["module"], lammps["commands"]) == (
        "lammps", "app", "lammps/gnu-2022", ["lmp"])
    assert lammps["base"] == f"{ran['base']}:ompi-4.1"


def test_the_run_pushed_the_catalogue_and_a_second_reading_is_the_same(ran, read):
    assert read["bodies"][0] == read["bodies"][1]
    namespace = ran["base"].split("/")[0]
    [pushed] = [p for p in ran["summary"]["publications"]
                if p["repository"] == f"{namespace}/catalog"]
    assert (pushed["tag"], pushed["result"]) == ("latest", "published")
    reference = f"{ran['settings'].registry}/{namespace}/catalog:latest"
    from_registry = pull_catalog(trusted(), reference)
    assert from_registry == read["bodies"][0]  # nothing changed since the run pushed it
    site = ran["root"] / "out" / "site"
    assert (site / "catalog.json").read_bytes() == from_registry
    assert (site / "index.html").is_file()
