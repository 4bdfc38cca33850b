"""Catalogue values cannot reach outside their line or the repository.

* control characters anywhere in matrix.yaml (values and keys) are bad input;
* recipe and input paths stay inside the catalogue's folder (no ``..``, no absolute path,
  no symlink out);
* the definition file has exactly the sections the factory writes, whatever the values
  (``one_line``), and a test.sh line that would start a section is refused;
* labels and build arguments do not carry control characters.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from pipeline.catalogue.text import section_lines
from pipeline.cli import main
from pipeline.names import BUILD_ID
from pipeline.planning.jobs import Job
from pipeline.stages.definition import (
    UnsafeDefinition,
    definition,
    one_line,
    section_headers,
    sif_labels,
)
from pipeline.stages.labels import UnsafeValue, build_args, image_labels
from pipeline.tools.git import Source
from tests.catalogues import BASIC, line_of, write

BAD_INPUT = 2  # the exit code
PAYLOAD = "x\n%post\n touch /pwned"
SECTIONS = ["%labels", "%help", "%environment", "%runscript", "%test"]


def refused(tmp_path, capsys, text: str, files: dict | None = None) -> list[str]:
    """Plan ``text`` through the command line: exit 2, nothing planned, no traceback."""
    matrix = write(tmp_path, text, files)
    code = main(["plan", "--matrix", str(matrix), "--format", "json"])
    captured = capsys.readouterr()
    assert code == BAD_INPUT
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert captured.err.endswith("nothing was planned, built or pushed.\n")
    return [line.replace(str(tmp_path) + "/", "") for line in captured.err.splitlines()[:-1]]


# -- control characters in matrix.yaml ------------------------------------------------------
def test_a_line_break_in_an_include_extra_is_refused_with_its_line(tmp_path, capsys):
    text = BASIC.replace('include: [{mpi: ompi-4.1, version: "2022"}]',
                         'include: [{mpi: ompi-4.1, version: "2022",\n'
                         '              note: "x\\n%post\\n touch /pwned"}]')
    assert refused(tmp_path, capsys, text) == [
        f"matrix.yaml:{line_of(text, 'note:')}: images[1].include[0].note: control character "
        "U+000A (line feed) in the value; catalogue values are single lines of text"]


@pytest.mark.parametrize("old,new,needle,where,what", [
    ("    kind: base\n", '    kind: base\n    description: "a\\tb"\n', "description",
     "images[0].description", "U+0009 (tab)"),
    ("    kind: base\n", '    kind: base\n    description: "a\\rb"\n', "description",
     "images[0].description", "U+000D (carriage return)"),
    ("    kind: base\n", '    kind: base\n    description: "a\\u2028b"\n', "description",
     "images[0].description", "U+2028 (line separator)"),
    ("    kind: base\n", '    kind: base\n    description: "a\\u2029b"\n', "description",
     "images[0].description", "U+2029 (paragraph separator)"),
    ('mirror: "http://m"}, defaults: {gcc: "12"}', 'mirror: "http://m\\N"}, defaults: {gcc: "12"}',
     'http://m\\N', "axes.os.values.deb12.bootstrap.mirror", "U+0085 (next line)"),
    ('reason: deb12 offers gcc 8, 11 and 12', 'reason: "deb12\\x1b[2J"', "deb12\\x1b",
     "constraints[0].reason", "U+001B (escape)"),
    ('registry: "127.0.0.1:5000"', 'registry: "127.0.0.1:5000\\x7f"', "registry",
     "targets.local.registry", "U+007F (delete)"),
    ("ompi-4.0: {family: openmpi}", 'ompi-4.0: {family: "openmpi\\x9b"}', "ompi-4.0:",
     "axes.mpi.values.ompi-4.0.family", "U+009B"),
    ('tag: "app-{version}"', 'tag: "app-{version}\\0"', 'tag: "app', "images[1].tag",
     "U+0000 (null)"),
    ("recipe: images/app", 'recipe: "images/app\\n"', "images/app\\n", "images[1].recipe",
     "U+000A (line feed)"),
])
def test_control_characters_are_refused_in_every_value(
        tmp_path, capsys, *, old, new, needle, where, what):
    text = BASIC.replace(old, new, 1)
    assert text != BASIC
    assert refused(tmp_path, capsys, text) == [
        f"matrix.yaml:{line_of(text, needle)}: {where}: control character {what} in the value; "
        "catalogue values are single lines of text"]


def test_control_characters_are_refused_in_keys(tmp_path, capsys):
    text = BASIC.replace("- if: {os: deb12}", '- if: {"os\\n%setup": deb12}')
    assert refused(tmp_path, capsys, text) == [
        f"matrix.yaml:{line_of(text, '- if:')}: constraints[0].if: control character U+000A "
        "(line feed) in the key 'os\\n%setup'; catalogue keys are single lines of text"]


def test_every_control_character_is_reported_at_once(tmp_path, capsys):
    text = (BASIC.replace("    kind: base\n", '    kind: base\n    description: "a\\nb"\n')
            .replace('version: "2022"', 'version: "20\\t22"'))
    errors = refused(tmp_path, capsys, text)
    assert [int(e.split(":")[1]) for e in errors] == [line_of(text, "description"),
                                                      line_of(text, "20\\t22")]


def test_a_printable_catalogue_still_plans(tmp_path, capsys):
    text = BASIC.replace("    kind: base\n", "    kind: base\n    description: 100% Debian\n")
    assert main(["plan", "--matrix", str(write(tmp_path, text))]) == 0


# -- test.sh lines that would start a section -------------------------------------------------
@pytest.mark.parametrize("line", ["%post", "    %setup", "\t%files", "\u00a0%post"])
def test_a_test_script_line_that_would_start_a_section_is_refused(tmp_path, capsys, line):
    script = f"#!/bin/sh\nset -eu\n{line}\ntrue\n"
    errors = refused(tmp_path, capsys, BASIC, {"images/base/test.sh": script})
    word = line.split()[-1]
    assert errors == [
        f"images/base/test.sh:3: '{word}' would start a section of the SIF's definition file, "
        "where this script is the %test of image base: Apptainer reads any line whose first "
        "word starts with '%' as a section header, indented or not; rewrite the line so that "
        "its first word does not start with '%' (e.g. quote it)"]


def test_percent_signs_elsewhere_in_a_test_script_are_fine():
    assert section_lines("printf '%s\\n' x\necho 100%\n  # %post in a comment? no: '#'\n") == []


# -- paths that leave the repository ----------------------------------------------------------
LEAVES = "leaves the repository; paths are relative to matrix.yaml and stay inside it"


@pytest.mark.parametrize("old,new,needle,where,path", [
    ("    recipe: images/app\n", "    recipe: ../../etc\n", "../../etc", "images[1].recipe",
     "../../etc"),
    ("    recipe: images/app\n", "    recipe: images/../../x\n", "images/../../x",
     "images[1].recipe", "images/../../x"),
    ("    recipe: images/app\n", "    recipe: /etc\n", "recipe: /etc", "images[1].recipe", "/etc"),
    ("    recipe: images/app\n", '    recipe: images/app\n    inputs: ["../../etc/hostname"]\n',
     "inputs", "images[1].inputs[0]", "../../etc/hostname"),
    ("    recipe: images/app\n", '    recipe: images/app\n    inputs: [ok, /etc/hostname]\n',
     "inputs", "images[1].inputs[1]", "/etc/hostname"),
])
def test_paths_out_of_the_repository_are_refused(
        tmp_path, capsys, *, old, new, needle, where, path):
    text = BASIC.replace(old, new, 1)
    errors = refused(tmp_path / "repo", capsys, text, {"ok": "x"})
    assert errors == [f"matrix.yaml:{line_of(text, needle)}: {where}: '{path}' {LEAVES}"]


def test_a_recipe_through_a_symlink_out_of_the_repository_is_refused(tmp_path, capsys):
    outside = tmp_path / "outside"
    (outside / "app").mkdir(parents=True)
    (outside / "app" / "Dockerfile").write_text("FROM scratch\n")
    repo = tmp_path / "repo"
    write(repo)
    os.symlink(outside, repo / "images" / "elsewhere")
    text = BASIC.replace("recipe: images/app", "recipe: images/elsewhere/app")
    errors = refused(repo, capsys, text)
    assert errors == [f"matrix.yaml:{line_of(text, 'images/elsewhere')}: images[1].recipe: "
                      f"'images/elsewhere/app' {LEAVES} (the symlink images/elsewhere -> "
                      f"{outside} points outside)"]


def test_a_symlink_inside_a_recipe_that_points_out_is_refused(tmp_path, capsys):
    repo = tmp_path / "repo"
    write(repo)
    os.symlink("/etc/hostname", repo / "images" / "app" / "test.sh")
    errors = refused(repo, capsys, BASIC)
    assert errors == [f"matrix.yaml:{line_of(BASIC, 'recipe: images/app')}: images[1].recipe: "
                      f"'images/app' {LEAVES} (the symlink images/app/test.sh -> /etc/hostname "
                      "points outside)"]


def test_an_input_through_a_symlinked_folder_is_refused(tmp_path, capsys):
    repo = tmp_path / "repo"
    write(repo)
    os.symlink("/etc", repo / "shared")
    text = BASIC.replace("    recipe: images/app\n",
                         "    recipe: images/app\n    inputs: [shared/hostname]\n")
    errors = refused(repo, capsys, text)
    assert errors == [f"matrix.yaml:{line_of(text, 'inputs')}: images[1].inputs[0]: "
                      f"'shared/hostname' {LEAVES} (the symlink shared -> /etc points outside)"]


def test_symlinks_and_dot_dots_that_stay_inside_are_fine(tmp_path, capsys):
    repo = tmp_path / "repo"
    write(repo, files={"shared/data.txt": "x"})
    os.symlink("../../shared/data.txt", repo / "images" / "app" / "data.txt")
    text = BASIC.replace("    recipe: images/app\n",
                         "    recipe: images/base/../app/\n    inputs: [./shared]\n")
    assert main(["plan", "--matrix", str(repo / "matrix.yaml")]) == 0
    write(repo, text)
    assert main(["plan", "--matrix", str(repo / "matrix.yaml"), "--format", "json"]) == 0
    assert '"recipe": "images/app"' in capsys.readouterr().out


# -- the definition file ----------------------------------------------------------------------
JOB = Job(id="r/x:t@amd64", image="x", kind="base", repository="r/x", tag="t", arch="amd64",
          variables={"os": "debian12", "mpi_family": "openmpi", "mpi_version": "4.1",
                     "gcc": "12"},
          recipe="images/x", needs=(), build_id="b" * 64)


def poisoned_job() -> Job:
    return dataclasses.replace(JOB, variables={**JOB.variables, "note": PAYLOAD,
                                               "mpi_version": "4.1\n%setup\n rm -rf /",
                                               "gcc": "%post"})


def deffile(job: Job, description: str = "An image", script: str = "#!/bin/sh\ntrue\n",
            revision: str = "abc") -> str:
    labels = sif_labels(job, "b" * 64, "sha256:" + "d" * 64, revision)
    return definition(job, "reg/x:tag", labels, description, script)


def apptainer_sections(text: str) -> list[str]:
    """Section headers the way Apptainer's scanner finds them: Go's bufio.ScanLines, then the
    first word of bufio.ScanWords (blanks: \\t\\n\\v\\f\\r, space, U+0085, U+00A0, U+1680,
    U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000) starting with '%'."""
    go_blanks = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
        chr(c) for c in range(0x2000, 0x200B))
    headers = []
    for line in text.split("\n"):
        word = line.lstrip(go_blanks)
        if word.startswith("%"):
            headers.append(word.split()[0])
    return headers


def test_a_poisoned_job_gives_no_extra_section():
    text = deffile(poisoned_job(), description=PAYLOAD)
    assert apptainer_sections(text) == SECTIONS
    assert section_headers(text) == SECTIONS
    assert [line for line in text.splitlines() if line.startswith("%")] == SECTIONS
    assert "touch /pwned" in text  # still there, escaped onto its line
    assert "    org.sjtuhpc.factory.var.note x\\n%post\\n touch /pwned" in text.splitlines()


def test_a_description_that_begins_with_a_percent_sign_is_escaped():
    text = deffile(JOB, description="%setup")
    assert "    \\%setup" in text.splitlines()
    assert apptainer_sections(text) == SECTIONS


def test_the_environment_and_test_exports_stay_on_their_line():
    job = dataclasses.replace(poisoned_job(), id="r/x:t\n%setup@amd64")
    labels = sif_labels(job, "b" * 10 + "\n%setup\ntouch /x", "sha256:1", "r")
    text = definition(job, "reg/x:tag", labels, "", "true\n")
    env = text.split("%environment\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert env == ["    export FACTORY_IMAGE='r/x:t\\n%setup@amd64'",
                   "    export FACTORY_BUILD_ID='bbbbbbbbbb\\n%setup\\ntouch /x'"]
    test = text.split("%test\n", 1)[1].splitlines()
    assert test[1] == ("    export OS=debian12 MPI_FAMILY=openmpi MPI_VERSION='4.1\\n%setup\\n "
                       "rm -rf /' GCC=%post NOTE='x\\n%post\\n touch /pwned'")
    assert apptainer_sections(text) == SECTIONS


def test_spython_reads_no_post_section_from_a_poisoned_job(tmp_path):
    parsers = pytest.importorskip("spython.main.parse.parsers")
    path = tmp_path / "x.def"
    path.write_text(deffile(poisoned_job(), description=PAYLOAD,
                            script="#!/bin/sh\necho ok\n"))
    recipe = parsers.SingularityParser(str(path)).recipe["spython-base"]
    # spython writes %runscript and %test as echo lines into files; a %post or %setup would
    # add commands of its own.
    assert [c for c in recipe.install if not c.startswith(('echo "', "chmod u+x "))] == []
    assert 'echo "echo ok" >> /tests.sh' in recipe.install
    assert recipe.files == []


@pytest.mark.parametrize("variables", [{"a-b": "1"}, {"x;touch /p": "1"}, {"1x": "1"}])
def test_a_variable_that_is_not_a_shell_name_is_refused(variables):
    with pytest.raises(UnsafeDefinition, match="is not a shell variable name"):
        definition(dataclasses.replace(JOB, variables=variables), "reg/x", {BUILD_ID: "b"}, "",
                   "true\n")


def test_a_label_key_with_a_blank_or_line_break_is_refused():
    labels = {BUILD_ID: "b", "a b": "c"}
    with pytest.raises(UnsafeDefinition, match="label name 'a b'"):
        definition(JOB, "reg/x", labels, "", None)
    with pytest.raises(UnsafeDefinition, match=r"label name 'a\\n%post'"):
        definition(JOB, "reg/x", {BUILD_ID: "b", "a\n%post": "c"}, "", None)


@pytest.mark.parametrize("line", ["%post", "  %setup", "\u00a0%files", "echo\r%post"])
def test_a_test_script_that_would_start_a_section_is_refused(line):
    with pytest.raises(UnsafeDefinition, match=r"test\.sh line 2: '%"):
        deffile(JOB, script=f"#!/bin/sh\n{line}\n")


def test_one_line_escapes_and_is_idempotent():
    for value in (PAYLOAD, "%setup", "  %x", "a\tb\x85c\u2028", "plain"):
        once = one_line(value, starts_line=True)
        assert one_line(once, starts_line=True) == once
        assert "\n" not in once and not once.lstrip().startswith("%")
    assert one_line("%1") == "%1"  # mid-line, a leading % is harmless and kept


def test_labels_read_back_as_written():
    labels = sif_labels(poisoned_job(), "b" * 64, "sha256:d", "abc")
    assert labels["org.sjtuhpc.factory.var.note"] == "x\\n%post\\n touch /pwned"
    text = definition(poisoned_job(), "reg/x", labels, "", None)
    assert "    org.sjtuhpc.factory.var.note x\\n%post\\n touch /pwned" in text.splitlines()


# -- labels and build arguments ---------------------------------------------------------------
def test_build_arguments_with_control_characters_are_refused():
    with pytest.raises(UnsafeValue, match="variable note: control character U\\+000A"):
        build_args(dataclasses.replace(JOB, variables={"note": PAYLOAD}))
    with pytest.raises(UnsafeValue, match="not a build argument name"):
        build_args(dataclasses.replace(JOB, variables={"a b": "1"}))
    assert build_args(JOB)["MPI_VERSION"] == "4.1"


def test_image_labels_escape_control_characters():
    labels = image_labels(poisoned_job(), "b", "base", "sha256:x", Source("https://x\n", "r"))
    assert labels["org.sjtuhpc.factory.var.note"] == "x\\n%post\\n touch /pwned"
    assert labels["org.opencontainers.image.source"] == "https://x\\n"
    assert all("\n" not in value for value in labels.values())
