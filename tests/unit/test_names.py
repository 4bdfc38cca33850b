"""File names made from job ids: one per id, and only characters a file name takes."""

from __future__ import annotations

import doctest
import itertools
import re

import pipeline.names
from pipeline.catalogue.tags import TAG_RE
from pipeline.names import file_name, sif_name

SAFE = re.compile(r"[A-Za-z0-9._-]+\Z")
# The OCI distribution spec's repository grammar, to check the generated names are valid.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")

# Small alphabets that still hold every separator of the grammars.
COMPONENTS = ["a", "b1", "a_b", "a__b", "a.b", "a-b", "a--b"]
TAG_CHARS = "a_.-"
EXTRA_TAGS = ["_", "__", "___", "_a", "a_", "_a_", "A.b", "_-", "__-a", "a-_", "a._"]
# The catalogue takes any value key as an arch ([A-Za-z0-9][A-Za-z0-9._-]*).
ARCHES = ["amd64", "arm64", "x86_64", "a", "b", "a__b", "a_", "a-b", "a.b_"]


def repositories() -> list[str]:
    found = ["/".join(p) for n in (1, 2) for p in itertools.product(COMPONENTS, repeat=n)]
    found += ["/".join(p) for p in itertools.product(["a", "a_b", "a__b"], repeat=3)]
    assert all(REPOSITORY_RE.match(r) for r in found)
    return found


def tags() -> list[str]:
    found = ["".join(p) for n in (1, 2, 3) for p in itertools.product(TAG_CHARS, repeat=n)]
    found = [t for t in dict.fromkeys(found + EXTRA_TAGS) if TAG_RE.match(t)]
    assert "_" in found and "__" in found and "a_" in found and "_a" in found
    return found


def job_ids() -> list[str]:
    return [f"{r}:{t}@{a}" for r in repositories() for t in tags() for a in ARCHES]


def test_the_two_ids_that_once_shared_a_name_no_longer_do():
    assert file_name("a/b_c:d@amd64") != file_name("a/b:c_d@amd64")
    assert sif_name("a/b_c:d@amd64") != sif_name("a/b:c_d@amd64")


def test_a_tag_of_underscores_does_not_read_as_the_inside_of_the_arch():
    assert file_name("a/a/a:_@b") != file_name("a:a@a__b")
    assert file_name("a_b/a/a:_@b") != file_name("a_b:a@a__b")


def test_no_two_job_ids_share_a_name():
    ids = job_ids()
    assert len(ids) > len(repositories()) * len(tags())
    names: dict[str, str] = {}
    for job_id in ids:
        name = file_name(job_id)
        assert names.setdefault(name, job_id) == job_id, (
            f"{job_id} and {names[name]} both give {name}")


def test_no_two_repository_tags_share_a_name():
    names: dict[str, str] = {}
    for text in (f"{r}:{t}" for r in repositories() for t in tags()):
        assert names.setdefault(file_name(text), text) == text


def test_names_hold_only_file_name_characters():
    for job_id in job_ids()[::7]:
        assert SAFE.match(file_name(job_id)), job_id


def test_the_usual_names_stay_readable():
    assert sif_name("sjtuhpc/hpc-base-container:ompi-4.1@arm64") == (
        "sjtuhpc_hpc-base-container_ompi-4.1_arm64.sif")


def test_the_examples_in_the_module_hold():
    failed, attempted = doctest.testmod(pipeline.names)
    assert attempted > 0 and failed == 0
