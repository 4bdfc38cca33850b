"""Tags: the default scheme clusters pull, templates, and what registries refuse."""

from __future__ import annotations

import pytest

from pipeline.catalogue.tags import MAX_TAG, check_tag, version_key
from tests.catalogues import BASIC, plan, write

WITH_CUDA = BASIC.replace(
    'axes: {os: [deb12, deb13], gcc: ["8", "12", "14"], mpi: [none, ompi-4.1], '
    'arch: [amd64, arm64]}',
    'axes: {os: [deb12, deb13], gcc: ["8", "12", "14"], cuda: [none, "10.2"], '
    'mpi: [none, ompi-4.0, ompi-4.1], arch: [amd64, arm64]}')


def tags_of(tmp_path, text=WITH_CUDA, image="base"):
    return {j.tag for j in plan(write(tmp_path, text)).values() if j.image == image}


def test_default_scheme_matches_what_clusters_pull(tmp_path):
    tags = tags_of(tmp_path)
    assert "gcc-8.cuda-10.2.ompi-4.0" in tags  # non-default components, axes order
    assert "ompi-4.1-deb13" in tags  # default gcc of deb13 (14) left out; OS as suffix
    assert "gcc-12.ompi-4.1-deb13" in tags
    assert "ompi-4.1" in tags  # default OS has no suffix
    assert "deb12" in tags and "deb13" in tags  # everything default: the OS alone
    assert not any("gcc-12" in t for t in tags if not t.endswith("deb13"))
    assert not any("amd64" in t or "arm64" in t for t in tags)


def test_arch_is_in_the_id_not_in_the_tag(tmp_path):
    jobs = plan(write(tmp_path))
    assert "t/base:gcc-8.ompi-4.1@arm64" in jobs
    assert "t/base:gcc-8.ompi-4.1@amd64" in jobs
    job = jobs["t/base:gcc-8.ompi-4.1@arm64"]
    assert (job.repository, job.tag, job.arch) == ("t/base", "gcc-8.ompi-4.1", "arm64")


def test_template_with_extras_and_variables(tmp_path):
    text = BASIC.replace('tag: "app-{version}"', 'tag: "app-{mpi_family}-{version}{os_suffix}"')
    assert tags_of(tmp_path, text, "app") == {"app-openmpi-2022"}


def test_app_default_template_is_name_then_default_scheme(tmp_path):
    text = BASIC.replace('    tag: "app-{version}"\n', "")
    assert tags_of(tmp_path, text, "app") == {"app-ompi-4.1"}


@pytest.mark.parametrize("tag,ok", [
    ("gcc-8.cuda-10.2.ompi-4.0", True),
    ("lammps-gnu-2022", True),
    ("_x", True),
    ("a" * MAX_TAG, True),
    ("a" * (MAX_TAG + 1), False),
    ("-leading-dash", False),
    (".leading-dot", False),
    ("has/slash", False),
    ("has:colon", False),
    ("has space", False),
    ("", False),
])
def test_check_tag_follows_the_distribution_spec(tag, ok):
    assert (check_tag(tag) is None) == ok


def test_version_key():
    assert version_key("11.8") == (11, 8)
    assert version_key("8") == (8,)
    assert version_key("none") is None
    assert version_key("11.x") is None
