"""Which declared jobs publishing needs build_ids for (fast, no registry)."""

from __future__ import annotations

from pipeline.planning.already_published import tag_closure
from pipeline.planning.jobs import Job


def job(repository: str, tag: str, arch: str, needs: tuple = ()) -> Job:
    return Job(id=f"{repository}:{tag}@{arch}", image=tag, kind="base", repository=repository,
               tag=tag, arch=arch, variables={}, recipe="images/x", needs=needs,
               build_id="b" * 64)


BASE = [job("r/base", "ompi", arch) for arch in ("amd64", "arm64")]
APP = [job("r/app", "lammps", arch, (f"r/base:ompi@{arch}",)) for arch in ("amd64", "arm64")]
OTHER = [job("r/base", "mpich", "amd64")]
DECLARED = [*BASE, *OTHER, *APP]


def test_every_arch_of_a_selected_tag_and_what_they_need_in_plan_order():
    closure = tag_closure(DECLARED, [APP[0]])
    assert [j.id for j in closure] == ["r/base:ompi@amd64", "r/base:ompi@arm64",
                                       "r/app:lammps@amd64", "r/app:lammps@arm64"]


def test_unrelated_tags_are_left_out():
    assert [j.id for j in tag_closure(DECLARED, OTHER)] == ["r/base:mpich@amd64"]
    assert tag_closure(DECLARED, []) == []
