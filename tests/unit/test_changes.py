"""Change detection against a git revision, in a temporary git repository, and the modes."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.planning.planner import plan_with_catalogue
from tests.catalogues import BASIC, commit, init_repo, plan, write

APP_IDS = {"t/app:app-2022@amd64", "t/app:app-2022@arm64"}
BAD_INPUT = 2  # the exit code


@pytest.fixture()
def repo(tmp_path):
    """A git repository whose catalogue lives in a sub-folder (as in a monorepo)."""
    matrix = write(tmp_path / "catalogue")
    (tmp_path / "README.md").write_text("docs\n")
    init_repo(tmp_path)
    return matrix


def built(jobs: dict) -> set:
    return {i for i, j in jobs.items() if j.action == "build"}


def test_nothing_changed_builds_nothing(repo):
    jobs = plan(repo, "pr", "HEAD")
    assert built(jobs) == set()
    assert {j.reason for j in jobs.values()} == {"unchanged since HEAD"}


def test_docs_only_change_builds_nothing(repo):
    (repo.parent.parent / "README.md").write_text("more docs\n")
    (repo.parent / "NOTES.md").write_text("notes beside matrix.yaml\n")
    commit(repo.parent.parent, "docs")
    assert built(plan(repo, "main", "HEAD~1")) == set()


def test_app_recipe_change_builds_only_that_app(repo):
    (repo.parent / "images/app/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    jobs = plan(repo, "pr", "HEAD")  # uncommitted work counts: the working tree is compared
    assert built(jobs) == APP_IDS
    assert jobs["t/app:app-2022@amd64"].reason == "recipe images/app/Dockerfile changed"


def test_base_recipe_change_rebuilds_bases_and_everything_on_them(repo):
    (repo.parent / "images/base/test.sh").write_text("#!/bin/sh\nset -eu\nfalse\n")
    commit(repo.parent.parent, "stricter test")
    jobs = plan(repo, "main", "HEAD~1")
    assert built(jobs) == set(jobs)
    assert jobs["t/base:deb12@amd64"].reason == "recipe images/base/test.sh changed"
    assert jobs["t/app:app-2022@arm64"].reason == "needs t/base:ompi-4.1@arm64, which is rebuilt"


def test_matrix_change_rebuilds_only_cells_whose_definition_changed(repo):
    text = BASIC.replace('gcc: ["8", "12", "14"]', 'gcc: ["8", "11", "12", "14"]').replace(
        'deb13: {bootstrap: {suite: trixie, mirror: "http://m"}',
        'deb13: {bootstrap: {suite: trixie, mirror: "http://mirror.example"}')
    (repo).write_text(text)
    jobs = plan(repo, "pr", "HEAD")
    new_gcc11 = {i for i in jobs if i.startswith("t/base:gcc-11")}
    deb13 = {i for i in jobs if "deb13" in i}
    assert new_gcc11 and built(jobs) == new_gcc11 | deb13
    assert all(jobs[i].reason == "new cell: not in the plan at HEAD" for i in new_gcc11)
    assert jobs["t/base:deb13@amd64"].reason == (
        "variables changed: os_mirror http://m -> http://mirror.example")
    assert not built(jobs) & APP_IDS  # the deb12 cells the apps use did not change


def test_change_of_base_resolution_is_explained(repo):
    repo.write_text(BASIC.replace("include: [{mpi: ompi-4.1,",
                                  'include: [{gcc: "8", mpi: ompi-4.1,'))
    jobs = plan(repo, "pr", "HEAD")
    assert built(jobs) == APP_IDS
    reason = jobs["t/app:app-2022@amd64"].reason
    assert "variables changed: gcc 12 -> 8" in reason
    assert "base is now t/base:gcc-8.ompi-4.1@amd64 (was t/base:ompi-4.1@amd64)" in reason


def test_matrix_missing_at_the_revision_builds_everything(tmp_path):
    (tmp_path / "README.md").write_text("x\n")
    init_repo(tmp_path)
    matrix = write(tmp_path)
    jobs = plan(matrix, "pr", "HEAD")
    assert built(jobs) == set(jobs)
    assert all("did not exist at HEAD" in j.reason for j in jobs.values())


def test_matrix_broken_at_the_revision_builds_everything_and_says_why(tmp_path):
    write(tmp_path, BASIC.replace("kind: app", "kind: ap"))
    init_repo(tmp_path)
    matrix = write(tmp_path)
    jobs = plan(matrix, "pr", "HEAD")
    assert built(jobs) == set(jobs)
    assert all("does not plan" in j.reason for j in jobs.values())


def test_modes(repo):
    nightly = plan(repo, "nightly")
    assert built(nightly) == set(nightly)
    assert all(j.reason.startswith("nightly") for j in nightly.values())
    everything = plan(repo, "pr")
    assert built(everything) == set(everything)
    assert all("no --changed-from" in j.reason for j in everything.values())


def test_unknown_revision_is_bad_input(repo, capsys):
    assert main(["plan", "--matrix", str(repo), "--changed-from", "no-such-branch"]) == BAD_INPUT
    err = capsys.readouterr().err
    assert "--changed-from no-such-branch: not a commit" in err
    assert "Traceback" not in err


def test_nightly_refuses_changed_from(repo, capsys):
    assert main(["plan", "--matrix", str(repo), "--mode", "nightly", "--changed-from",
                 "HEAD"]) == BAD_INPUT
    assert "nightly considers every cell" in capsys.readouterr().err


def test_changed_from_outside_git_is_bad_input(tmp_path, capsys):
    matrix = write(tmp_path / "not-a-repo")
    assert main(["plan", "--matrix", str(matrix), "--changed-from", "HEAD"]) == BAD_INPUT
    assert "not inside a git repository" in capsys.readouterr().err


def test_unchanged_jobs_are_remembered_even_when_kept_for_a_selection(repo):
    """The planner re-checks these against the target outside pr mode
    (tests/unit/test_published_rerun.py); the reason alone could not tell them apart."""
    (repo.parent / "images/app/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    planned = plan_with_catalogue(repo, "main", "HEAD", ["t/app:*@amd64"])
    assert planned.unchanged == {j.id for j in planned.declared if j.action == "skip"}
    assert "t/base:ompi-4.1@amd64" in planned.unchanged
    assert not APP_IDS & planned.unchanged
