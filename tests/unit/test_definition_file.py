"""recipe.def recipes: read as Apptainer reads them, refused where a stranger's file could do
harm or mislead the plan, and planned with the catalogue's own tags as needs."""

from __future__ import annotations

import doctest
import json
import textwrap

import pytest

from pipeline.errors import InputError
from pipeline.planning import definition_file
from pipeline.planning import jobs as jobs_module
from pipeline.planning.definition_file import DefStage, parse_reference, read_definition
from pipeline.planning.planner import make_plan
from tests.catalogues import (
    BASIC,
    DEF_IMAGE,
    DEF_RECIPE,
    init_repo,
    line_of,
    plan,
    with_definition,
    write,
)

PATH = "images/defapp/recipe.def"


def problems_of(text: str) -> list[str]:
    """What read_definition says about ``text`` (dedented), each as FILE:LINE: message."""
    with pytest.raises(InputError) as err:
        read_definition(PATH, textwrap.dedent(text))
    return [str(p) for p in err.value.problems]


def plan_problems(tmp_path, recipe: str, text: str = BASIC, image: str = DEF_IMAGE) -> list[str]:
    matrix = write(tmp_path, *with_definition(textwrap.dedent(recipe), text, image))
    with pytest.raises(InputError) as err:
        make_plan(matrix, "pr")
    return [str(p) for p in err.value.problems]


def def_jobs(tmp_path, recipe: str = DEF_RECIPE, **kwargs) -> dict:
    matrix = write(tmp_path, *with_definition(textwrap.dedent(recipe), **kwargs))
    return {k: j for k, j in plan(matrix).items() if j.image == "defapp"}


# -- reading ---------------------------------------------------------------------------------
def test_stages_names_sources_files_from_and_lines():
    definition = read_definition(PATH, DEF_RECIPE)
    assert definition.path == PATH and definition.text == DEF_RECIPE
    assert definition.stages == (
        DefStage("build", "docker", "t/base:ompi-4.1", 1, 2, ()),  # the comment is dropped
        DefStage(None, "docker", "t/base:ompi-4.1", line_of(DEF_RECIPE, "Bootstrap", 2),
                 line_of(DEF_RECIPE, "From:", 2),
                 (("build", line_of(DEF_RECIPE, "%files from build")),)),
    )


def test_headers_read_as_apptainer_reads_them():
    # Key case and blanks do not matter, '#' starts a comment, an upper-case tag keeps its
    # case (spython would lower-case it), and a From: value containing "bootstrap" is a
    # From: (spython would take the line for a Bootstrap: header).
    text = ("# a comment before the first stage is fine\n"
            "BOOTSTRAP: docker\n"
            "  from :  docker.io/t/bootstrap:Build-1   # pinned by the factory\n"
            "STAGE:one\n"
            "%post\n"
            "    ./bootstrap.sh from: stage: x   # spython would read this line as headers\n"
            "bootstrap: docker\n"
            "From: debian:12\n"
            "%Files from one\n"
            "    /a /b\n")
    first, second = read_definition(PATH, text).stages
    assert first == DefStage("one", "docker", "docker.io/t/bootstrap:Build-1", 2, 3, ())
    assert second == DefStage(None, "docker", "debian:12", 7, 8, (("one", 9),))


def test_a_bootstrap_line_that_apptainer_does_not_split_at_stays_in_its_section():
    # Apptainer starts a stage only at "bootstrap:" in column 0; inside %post this line is
    # shell text of the same stage, so there is no second stage to check.
    text = "Bootstrap: docker\nFrom: debian:12\n%post\n    echo x\nbootstrap : localimage\n"
    assert len(read_definition(PATH, text).stages) == 1


@pytest.mark.parametrize("ref,expected", [
    ("debian:12", (None, "debian", "12", None)),
    ("t/base:ompi-4.1", (None, "t/base", "ompi-4.1", None)),
    ("127.0.0.1:5000/t/base:x", ("127.0.0.1:5000", "t/base", "x", None)),
    ("ghcr.io/a/b@sha256:" + "0" * 64, ("ghcr.io", "a/b", None, "sha256:" + "0" * 64)),
    ("localhost/a", ("localhost", "a", None, None)),
    ("Debian:12", None), ("a//b", None), ("docker://debian:12", None), ("a:b c", None),
    ("{{ BASE }}", None), ("a:" + "x" * 129, None), ("a/" * 130 + "a", None),
])
def test_references_follow_the_distribution_grammar(ref, expected):
    found = parse_reference(ref)
    assert (found and (found.host, found.path, found.tag, found.digest)) == expected


# -- refused in the file itself --------------------------------------------------------------
@pytest.mark.parametrize("text,line,message", [
    ("Bootstrap: docker\nStage: x\n%post\n  true\n", 1,
     "this stage has no 'From:' line; add 'From: IMAGE' under its 'Bootstrap: docker' (a tag "
     "of this catalogue, or a public image)"),
    ("Bootstrap: docker\nFrom: debian:12\n\nBootstrap: docker\n%files from x\n", 4,
     "this stage has no 'From:' line"),
    ("# only comments\n\n", 1, "no 'Bootstrap:' line: start the file with"),
    ("Bootstrap: localimage\nFrom: /srv/images/base.sif\n", 1,
     "'Bootstrap: localimage': the factory builds only from registry images it can pin by "
     "digest, and other bootstrap agents read files of the build host"),
    ("Bootstrap: docker\nFrom: debian:12\nBootstrap: library\nFrom: alpine\n", 3,
     "'Bootstrap: library'"),
    ("Bootstrap: scratch\nFrom: x\n", 1, "'Bootstrap: scratch'"),
    ("Bootstrap: docker\nFrom: debian:12\n%setup\n  touch ${APPTAINER_ROOTFS}/x\n", 3,
     "%setup runs as root on the build host, outside the container: refused for security; "
     "do the work in %post, and copy files in with %files"),
    ("Bootstrap: docker\nFrom: debian:12\n%pre\n  true\n", 3,
     "'%pre' is not a section the factory builds; use %post, %files, %environment"),
    ("Bootstrap: docker\nFrom: debian:12\nRegistry: evil.example\n", 3,
     "header 'registry:' is not allowed (it changes which registry From: is pulled from); "
     "the factory reads only Bootstrap:, From: and Stage:, delete it"),
    ("Bootstrap: docker\nFrom: debian:12 \\\n  :13\n", 2,
     "'from:' continues on the next line; write it on one line"),
    ("Bootstrap: docker\nFrom debian:12\n", 2, "header 'from debian:' is not allowed"),
    ("Bootstrap: docker\nFrom  debian\n", 2, "'From  debian' is not a header line ('KEY: "
     "VALUE'); sections start with '%' (e.g. %post)"),
    ("  Bootstrap: docker\nFrom: debian:12\n", 1,
     "write 'Bootstrap:' at the very start of its line, with no blank before it or before "
     "its ':': Apptainer starts a stage only there"),
    ("# x\nbootstrap : docker\nFrom: debian:12\n", 2, "write 'Bootstrap:' at the very start"),
    ("%post\n  true\nBootstrap: docker\nFrom: debian:12\n", 1,
     "text before the first 'Bootstrap:' line: Apptainer would read it as a stage of its own"),
    ("Bootstrap: docker\nFrom: debian:12\n%files from\n  /a /b\n", 3,
     "'%files from': write '%files' or '%files from STAGE'"),
    ("Bootstrap: docker\nFrom: debian:12\nStage: a\n%files from a\n  /a /b\n", 4,
     "'%files from a' names this stage itself; name an earlier stage"),
    ("Bootstrap: docker\nFrom: debian:12\n%files from build\n  /a /b\n", 3,
     "'%files from build': there is no stage 'build'; give the stage it means 'Stage: build'"),
    ("Bootstrap: docker\nFrom: debian:12\nStage: a\n%files from b\n  /x /x\n"
     "Bootstrap: docker\nFrom: debian:12\nStage: b\n", 4,
     "'%files from b': stage 'b' comes later; move it before this one"),
    ("Bootstrap: docker\nFrom: debian:12\nStage: a\nBootstrap: docker\nFrom: debian:12\n"
     "Stage: a\n", 4, "two stages are named 'a' (the first at line 1); rename one"),
    ("Bootstrap: docker\r\nFrom: debian:12\r\n", 1,
     "U+000D (carriage return): Apptainer and the factory would split this line differently"),
    ("Bootstrap: docker\nFrom: debian:12\n%post\n  true\u2028%setup\n", 4,
     "U+2028 (line separator): Apptainer and the factory would split this line differently; "
     "save the file with LF line endings and no control characters"),
])
def test_bad_files(text, line, message):
    found = problems_of(text)
    assert any(p.startswith(f"{PATH}:{line}: {message}") for p in found), found


def test_hostile_headers_and_sections():
    # A second, oddly written bootstrap header in the same stage (Apptainer keeps the last:
    # localimage), a %setup hidden after an indented line and spelt in capitals, and one
    # after a tab: each refused at its line.
    text = ("Bootstrap: docker\n"
            "From: t/base:ompi-4.1\n"
            " bootstrap : localimage\n"
            "%post\n"
            "    make\n"
            "      \t%SETUP\n"
            "    cp /etc/shadow .\n"
            "%environment\n"
            "\t%%setup # a comment\n")
    assert [p.split(": ", 1)[0] for p in problems_of(text)] == [
        f"{PATH}:3", f"{PATH}:6", f"{PATH}:9"]
    assert "'bootstrap:' is given twice in this stage (first on line 1)" in problems_of(text)[0]


@pytest.mark.parametrize("source", ["/root/.docker/config.json", "~/.ssh/id_rsa",
                                    "'../../../etc/shadow'", "a/../../b", "{{SECRET}}"])
def test_host_files_outside_the_recipe_folder(source):
    text = (f"Bootstrap: docker\nFrom: debian:12\n%files\n    app.tar /opt/\n"
            f"    {source} /x\n%files from nowhere_yet\n")
    shown = source.strip("'")
    assert problems_of(text)[0] == (
        f"{PATH}:5: %files copies '{shown}' from the build host into the image: only files of "
        "the recipe folder may go in (a relative path, no '..', no {{ }}); put the file next "
        "to recipe.def and name it relative to it")


def test_files_from_a_stage_copies_stage_paths():
    text = ("Bootstrap: docker\nFrom: debian:12\nStage: b\n"
            "Bootstrap: docker\nFrom: debian:12\n%files from b\n    /opt/app /opt/app\n"
            "%files\n    ./etc/app.conf /etc/app.conf\n")
    assert read_definition(PATH, text).stages[1].files_from == (("b", 6),)


def test_every_problem_at_once_in_file_order():
    text = ("Bootstrap: docker\nFrom: debian:12\n%files from nowhere\n  /a /a\n"
            "Bootstrap: shub\nFrom: a/b\n%setup\n  x\n")
    assert [p.split(": ", 1)[0] for p in problems_of(text)] == [
        f"{PATH}:3", f"{PATH}:5", f"{PATH}:7"]


# -- planned ---------------------------------------------------------------------------------
def test_own_tags_become_needs_and_public_images_sources(tmp_path):
    recipe = DEF_RECIPE.replace("From: t/base:ompi-4.1\n%files", "From: debian:12-slim\n%files")
    jobs = def_jobs(tmp_path, recipe)
    assert sorted(jobs) == ["t/app:defapp@amd64", "t/app:defapp@arm64"]
    job = jobs["t/app:defapp@arm64"]
    assert job.needs == ("t/base:ompi-4.1@arm64",)  # the same arch
    assert job.recipe_file == "recipe.def" and job.recipe == "images/defapp"
    assert job.sources == ((2, "need", "t/base:ompi-4.1@arm64"),
                           (line_of(recipe, "From:", 2), "public", "debian:12-slim"))


def test_two_stages_from_one_tag_need_it_once(tmp_path):
    job = def_jobs(tmp_path)["t/app:defapp@amd64"]
    assert job.needs == ("t/base:ompi-4.1@amd64",)
    assert [kind for _, kind, _ in job.sources] == ["need", "need"]


@pytest.mark.parametrize("prefix", ["docker.io/", "127.0.0.1:5000/"])  # Hub, the target
def test_own_repository_behind_its_registry_host(tmp_path, prefix):
    recipe = f"Bootstrap: docker\nFrom: {prefix}t/base:ompi-4.1\n"
    job = def_jobs(tmp_path, recipe)["t/app:defapp@amd64"]
    assert job.needs == ("t/base:ompi-4.1@amd64",)
    assert job.sources == ((2, "need", "t/base:ompi-4.1@amd64"),)


def test_another_registry_with_the_same_path_is_public(tmp_path):
    job = def_jobs(tmp_path, "Bootstrap: docker\nFrom: ghcr.io/t/base:ompi-4.1\n")
    assert job["t/app:defapp@amd64"].needs == ()


def test_changing_its_base_recipe_replans_it(tmp_path):
    before = def_jobs(tmp_path / "a")
    after = def_jobs(tmp_path / "b")  # the same catalogue elsewhere: the same ids
    assert {k: j.build_id for k, j in before.items()} == {k: j.build_id for k, j in after.items()}
    matrix = write(tmp_path / "b", *with_definition(),)
    (tmp_path / "b/images/base/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                                                       "RUN true\n")
    changed = {k: j for k, j in plan(matrix).items() if j.image == "defapp"}
    assert all(changed[k].build_id != before[k].build_id for k in before)
    (tmp_path / "b/images/defapp/recipe.def").write_text(DEF_RECIPE + "%labels\n  a b\n")
    again = {k: j for k, j in plan(matrix).items() if j.image == "defapp"}
    assert all(again[k].build_id != changed[k].build_id for k in before)


def test_changed_from_a_revision_rebuilds_it_with_its_base(tmp_path):
    matrix = write(tmp_path, *with_definition())
    init_repo(tmp_path)
    assert {j.action for j in plan(matrix, "pr", "HEAD").values()} == {"skip"}
    (tmp_path / "images/base/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n#\n")
    built = {i for i, j in plan(matrix, "pr", "HEAD").items() if j.action == "build"}
    assert {"t/app:defapp@amd64", "t/app:defapp@arm64", "t/base:ompi-4.1@amd64"} <= built
    assert "t/app:app-2022@amd64" in built  # as the Dockerfile app on the same base


def test_json_shows_recipe_file_and_sources(tmp_path):
    data = def_jobs(tmp_path)["t/app:defapp@amd64"].to_json()
    assert data["recipe_file"] == "recipe.def"
    assert data["sources"] == [{"line": 2, "kind": "need", "ref": "t/base:ompi-4.1@amd64"},
                               {"line": 10, "kind": "need", "ref": "t/base:ompi-4.1@amd64"}]
    json.dumps(data)  # the plan prints it
    base = next(j for j in plan(write(tmp_path / "x")).values() if j.image == "base")
    assert base.to_json()["recipe_file"] == "Dockerfile" and base.to_json()["sources"] == []


def test_read_once_per_image_not_per_cell(tmp_path, monkeypatch):
    calls = []
    real = jobs_module.read_definition
    monkeypatch.setattr(jobs_module, "read_definition",
                        lambda path, text: calls.append(path) or real(path, text))
    assert len(def_jobs(tmp_path)) == 2  # two cells
    assert calls == [PATH]


def test_planned_after_its_base_whatever_the_order_written(tmp_path):
    text = BASIC.replace("images:\n", "images:\n" + DEF_IMAGE)  # before the base image
    matrix = write(tmp_path, *with_definition(text=text, image=""))
    ids = list(plan(matrix))
    assert ids.index("t/app:defapp@amd64") > ids.index("t/base:ompi-4.1@amd64")


def test_built_from_another_app_tag(tmp_path):
    jobs = def_jobs(tmp_path, "Bootstrap: docker\nFrom: t/app:app-2022\n")
    assert jobs["t/app:defapp@amd64"].needs == ("t/app:app-2022@amd64",)


# -- refused when planned --------------------------------------------------------------------
def test_a_tag_the_catalogue_does_not_have(tmp_path):
    (err,) = plan_problems(tmp_path, "Bootstrap: docker\n\nFrom: t/base:ompi-9.9\n")
    assert err == (f"{PATH}:3: From: 't/base:ompi-9.9' names this catalogue's repository "
                   "t/base, but the catalogue has no tag 'ompi-9.9' for amd64, arm64 there (it "
                   "has deb12, deb13, gcc-12-deb13, gcc-12.ompi-4.1-deb13, gcc-8 (and 5 "
                   "more)); name one of its tags, or add the cell that makes this one")


def test_a_tag_missing_for_one_arch(tmp_path):
    text = BASIC.replace("mpi: [none, ompi-4.1], arch: [amd64, arm64]}",
                         "mpi: [none, ompi-4.1], arch: [amd64, arm64]}\n"
                         "    exclude: [{arch: arm64, mpi: ompi-4.1}]")
    text = text.replace("include: [{mpi: ompi-4.1, version", "include: [{mpi: none, version")
    first, second = plan_problems(tmp_path, DEF_RECIPE, text=text)  # both stages name it
    assert first == (f"{PATH}:2: From: 't/base:ompi-4.1' names this catalogue's repository "
                     "t/base, but the catalogue has no tag 'ompi-4.1' for arm64 there (it has "
                     "deb12, deb13, gcc-12-deb13, gcc-8, gcc-8-deb13); name one of its tags, or "
                     "add the cell that makes this one")
    assert second.startswith(f"{PATH}:10: ")


def test_a_base_of_another_mpi(tmp_path):
    text = BASIC.replace("ompi-4.1: {family: openmpi}}",
                         "ompi-4.1: {family: openmpi}, mpich-4.0: {family: mpich}}").replace(
        "mpi: [none, ompi-4.1], arch", "mpi: [none, ompi-4.1, mpich-4.0], arch")
    recipe = "Bootstrap: docker\nFrom: t/base:ompi-4.1\nStage: b\n\nBootstrap: docker\n" \
             "From: t/base:mpich-4.0\n%files from b\n  /opt /opt\n"
    (err,) = plan_problems(tmp_path, recipe, text=text)
    assert err == (f"{PATH}:6: From: 't/base:mpich-4.0' is t/base:mpich-4.0, built for "
                   "mpi=mpich-4.0, but image defapp's cell t/app:defapp has mpi=ompi-4.1; name "
                   "the tag built for mpi=ompi-4.1, or give image defapp mpi: mpich-4.0 (in its "
                   "axes or an include entry)")


def test_a_base_of_another_gcc_than_the_cell_says(tmp_path):
    (err,) = plan_problems(tmp_path, "Bootstrap: docker\nFrom: t/base:gcc-8.ompi-4.1\n")
    assert err.startswith(f"{PATH}:2: From: 't/base:gcc-8.ompi-4.1' is t/base:gcc-8.ompi-4.1, "
                          "built for gcc=8, but image defapp's cell t/app:defapp has gcc=12")


@pytest.mark.parametrize("source,message", [
    ("t/base:ompi-4.1@sha256:" + "a" * 64,
     "names this catalogue's repository t/base by digest: the plan cannot tell which job "
     "builds it; name its tag, the factory pins the digest itself"),
    ("T/Base:ompi-4.1", "is not an image reference (as Docker reads them"),
    ("{{ BASE }}", "is not an image reference"),
])
def test_references_refused(tmp_path, source, message):
    (err,) = plan_problems(tmp_path, f"Bootstrap: docker\nFrom: {source}\n")
    assert err.startswith(f"{PATH}:2: From: '{source}' {message}")


def test_an_image_built_from_a_broken_one_is_not_reported_again(tmp_path):
    second = DEF_IMAGE.replace("defapp", "defapp2").replace("tag: defapp2", "tag: d2")
    matrix = write(tmp_path, *with_definition(text=BASIC + second,
                                              recipe="Bootstrap: docker\nFrom: t/base:nope\n"))
    (tmp_path / "images/defapp2").mkdir()
    (tmp_path / "images/defapp2/recipe.def").write_text("Bootstrap: docker\nFrom: t/app:defapp\n")
    with pytest.raises(InputError) as err:
        make_plan(matrix, "pr")
    assert [p.file for p in err.value.problems] == [PATH]


def test_a_cycle_through_a_definition_file(tmp_path):
    # defapp builds FROM an app tag, and that app's base is defapp.
    text = BASIC.replace("    base: base\n", "    base: defapp\n")
    (err,) = plan_problems(tmp_path, "Bootstrap: docker\nFrom: t/app:app-2022\n", text=text)
    assert err == (f"{tmp_path / 'matrix.yaml'}:{line_of(text, 'base: defapp')}: images build "
                   "FROM each other in a cycle: app -> defapp -> app; one of them must use "
                   "another base")


def test_examples_in_the_docstrings_hold():
    failed, attempted = doctest.testmod(definition_file)
    assert attempted and not failed
