"""Bad matrix.yaml: exit 2, `matrix.yaml:LINE: what and what to do`, every problem, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.cli import main
from tests.catalogues import BASIC, DEF_IMAGE, line_of, with_definition, write

BAD_INPUT = 2  # the exit code


def run_plan(tmp_path, text, capsys, files=None):
    matrix = write(tmp_path, text, files)
    code = main(["plan", "--matrix", str(matrix), "--format", "json"])
    captured = capsys.readouterr()
    assert code == BAD_INPUT
    assert captured.out == ""  # nothing planned
    assert "Traceback" not in captured.err
    assert "nothing was planned, built or pushed" in captured.err
    return [line.replace(str(matrix), "matrix.yaml") for line in captured.err.splitlines()[:-1]]


def test_yaml_syntax_error(tmp_path, capsys):
    text = BASIC.replace("  gcc: {values:", "  gcc: {values: [", 1)
    (err,) = run_plan(tmp_path, text, capsys)
    assert err.startswith(f"matrix.yaml:{line_of(text, 'gcc: {values:')}: YAML syntax error")


def test_key_given_twice(tmp_path, capsys):
    text = BASIC.replace("    kind: base\n", "    kind: base\n    kind: gpu\n")
    (err,) = run_plan(tmp_path, text, capsys)
    assert err == (f"matrix.yaml:{line_of(text, 'kind: gpu')}: key 'kind' is given twice here; "
                   "keep one")


@pytest.mark.parametrize("old,new,needle,expected", [
    ("images:\n", "colour: red\nimages:\n", "colour",
     ("unknown key 'colour' in the top level; allowed keys: axes, ci, constraints, default_target, "
      "images, repositories, targets")),
    ("    recipe: images/app\n", "    recipe: images/app\n    recipes: x\n", "recipes:",
     ("unknown key 'recipes' in images[1]; allowed keys: axes, base, commands, description, "
      "exclude, include, inputs, kind, name, recipe, repository, tag, upstream")),
    ('reason: deb12 offers gcc 8, 11 and 12', 'reason: deb12\n    because: x', "because:",
     "unknown key 'because' in constraints[0]; allowed keys: if, reason, then"),
])
def test_unknown_keys_anywhere(tmp_path, capsys, old, new, needle, expected):
    text = BASIC.replace(old, new, 1)
    assert run_plan(tmp_path, text, capsys) == [f"matrix.yaml:{line_of(text, needle)}: {expected}"]


@pytest.mark.parametrize("old,new,needle,expected", [
    ("    kind: base\n", "    kind: [base]\n", "kind: [base]",
     "images[0].kind: '['base']' is not one of base, gpu, app"),
    ("axes: {os: [deb12], arch", "axes: {os: deb12, arch", "os: deb12, arch",
     "images[1].axes.os must be a list, not 'deb12'"),
    ('registry: "127.0.0.1:5000"', "registry: 5000", "registry",
     None),  # numbers are read as written: a valid (if odd) registry, no error
    ("    base: base\n", "    base: true\n", "base: true",
     "images[1].base: name the base image, or give {image: NAME, match: [axes...]}"),
])
def test_wrong_types(tmp_path, capsys, old, new, needle, expected):
    text = BASIC.replace(old, new, 1)
    if expected is None:
        matrix = write(tmp_path, text)
        assert main(["plan", "--matrix", str(matrix)]) == 0
        return
    assert run_plan(tmp_path, text, capsys) == [f"matrix.yaml:{line_of(text, needle)}: {expected}"]


def test_unknown_axis_values_in_include_exclude_and_constraints(tmp_path, capsys):
    text = (BASIC
            .replace("include: [{mpi: ompi-4.1,", "include: [{mpi: ompi-9.9,")
            .replace("    base: base\n", "    base: base\n    exclude: [{gcc: '7'}]\n")
            .replace("- if: {os: deb12}", "- if: {os: deb11}")
            .replace('then: {gcc: {max: "8"}}', 'then: {compiler: {max: "8"}}'))
    errors = run_plan(tmp_path, text, capsys)
    assert errors == [
        (f"matrix.yaml:{line_of(text, 'os: deb11')}: constraints[0].if: 'deb11' is not a value of "
        "axis os; use one of deb12, deb13 or add it under axes.os.values"),
        (f"matrix.yaml:{line_of(text, 'compiler:')}: constraints[1].then: there is no axis "
        "'compiler' (axes: os, gcc, cuda, mpi, arch)"),
        (f"matrix.yaml:{line_of(text, 'ompi-9.9')}: image app include: 'ompi-9.9' is not a "
        "value of axis mpi; use one of none, ompi-4.0, ompi-4.1 or add it under axes.mpi.values"),
        (f"matrix.yaml:{line_of(text, 'exclude:')}: image app exclude: '7' is not a value of axis "
        "gcc; use one of 8, 11, 12, 14 or add it under axes.gcc.values"),
    ]


def test_recipe_folder_that_does_not_exist(tmp_path, capsys):
    text = BASIC.replace("recipe: images/app", "recipe: images/lammps")
    (err,) = run_plan(tmp_path, text, capsys)
    assert err == (f"matrix.yaml:{line_of(text, 'images/lammps')}: image app: recipe folder "
                   "'images/lammps' does not exist; create it (with a Dockerfile or a "
                   "recipe.def) or fix the path, which is relative to matrix.yaml")


def test_recipe_folder_without_dockerfile(tmp_path, capsys):
    text = BASIC.replace("recipe: images/app", "recipe: images/empty")
    (err,) = run_plan(tmp_path, text, capsys, {"images/empty/README": "x"})
    assert err == (f"matrix.yaml:{line_of(text, 'images/empty')}: image app: recipe folder "
                   "'images/empty' has no Dockerfile and no recipe.def; add one "
                   "(images/README.md)")


def test_two_cells_with_the_same_id(tmp_path, capsys):
    text = BASIC.replace('    tag: "app-{version}"\n', '    tag: "app-{version}"\n'
                         "  - name: app2\n    kind: app\n    recipe: images/app\n    base: base\n"
                         "    axes: {os: [deb12], arch: [amd64]}\n"
                         "    include: [{mpi: ompi-4.1, version: '2022'}]\n"
                         '    tag: "app-{version}"\n')
    (err,) = run_plan(tmp_path, text, capsys)
    second_tag = line_of(text, 'tag: "app-{version}"', 2)
    assert err.startswith(f"matrix.yaml:{second_tag}: two cells "
                          "get the id t/app:app-2022@amd64: image app2 {os=deb12")
    assert f"image app (line {line_of(text, 'name: app')})" in err
    assert "make the tag template tell them apart" in err


def test_app_whose_base_matches_no_cell(tmp_path, capsys):
    text = BASIC.replace("include: [{mpi: ompi-4.1,", "include: [{mpi: ompi-4.0,")
    (err,) = run_plan(tmp_path, text, capsys)
    assert err == (f"matrix.yaml:{line_of(text, 'base: base')}: image app: no cell of base image "
                   "'base' matches on os, gcc, mpi, arch: t/app:app-2022@amd64 needs {os=deb12, "
                   "gcc=12, mpi=ompi-4.0, arch=amd64}; t/app:app-2022@arm64 needs {os=deb12, "
                   "gcc=12, mpi=ompi-4.0, arch=arm64}; add that cell to the base image or "
                   "restrict app's axes")


def test_app_whose_base_matches_several_cells(tmp_path, capsys):
    text = BASIC.replace("    base: base\n", "    base: {image: base, match: [os]}\n")
    (err,) = run_plan(tmp_path, text, capsys)
    assert err.startswith(f"matrix.yaml:{line_of(text, 'base: {image')}: image app: several "
                          "cells of base image 'base' match: t/app:app-2022@amd64 matches "
                          "t/base:gcc-8@amd64, ")
    assert err.endswith("add the axis that tells them apart to base.match")


def test_base_that_is_not_an_image(tmp_path, capsys):
    text = BASIC.replace("    base: base\n", "    base: bsae\n")
    (err,) = run_plan(tmp_path, text, capsys)
    assert err == (f"matrix.yaml:{line_of(text, 'base: bsae')}: image app: base image 'bsae' is "
                   "not in images; use one of base, app")


def test_dependency_cycle(tmp_path, capsys):
    text = BASIC.replace("    kind: base\n", "    kind: base\n    base: app\n")
    (err,) = run_plan(tmp_path, text, capsys)
    assert err == (f"matrix.yaml:{line_of(text, 'base: app')}: images build FROM each other in a "
                   "cycle: base -> app -> base; one of them must use another base")


def test_tag_with_characters_a_registry_refuses(tmp_path, capsys):
    text = BASIC.replace('tag: "app-{version}"', 'tag: "app {version}/x"')
    (err,) = run_plan(tmp_path, text, capsys)
    line = line_of(text, 'tag: "app')
    assert err == (f"matrix.yaml:{line}: image app tag 'app {{version}}/x': tag "
                   "'app 2022/x' has characters a registry refuses; a tag is letters, digits, "
                   "'_', '.' and '-', not starting with '.' or '-'")


def test_tag_longer_than_128_characters(tmp_path, capsys):
    text = BASIC.replace('tag: "app-{version}"', 'tag: "app-{version}-' + "x" * 130 + '"')
    (err,) = run_plan(tmp_path, text, capsys)
    assert "is 139 characters; registries accept at most 128" in err


def test_tag_template_with_unknown_field_or_arch(tmp_path, capsys):
    text = BASIC.replace('tag: "app-{version}"', 'tag: "app-{verison}-{arch}"')
    errors = run_plan(tmp_path, text, capsys)
    line = line_of(text, 'tag: "app')
    assert errors[0] == (f"matrix.yaml:{line}: image app tag 'app-{{verison}}-{{arch}}': unknown "
                         "field {verison}; use one of components, cuda, default, gcc, mpi, "
                         "mpi_family, name, os, os_mirror, os_source, os_suffix, "
                         "os_suite, version")
    assert "{arch} puts the arch in the Docker tag" in errors[1]


def test_empty_image_says_which_rule_removed_its_cells(tmp_path, capsys):
    text = BASIC.replace("axes: {os: [deb12], arch: [amd64, arm64]}",
                         'axes: {os: [deb12], gcc: ["14"], arch: [amd64, arm64]}')
    (err,) = run_plan(tmp_path, text, capsys)
    assert err == (f"matrix.yaml:{line_of(text, 'name: app')}: image app has no cells left: its "
                   "axes give 2 combination(s); 2 removed by constraint 'deb12 offers gcc 8, 11 "
                   f"and 12' (line {line_of(text, '- if: {os: deb12}')}); loosen those rules or "
                   "fix the image's axes")


def test_unspanned_axis_without_default(tmp_path, capsys):
    text = BASIC.replace("  arch: {default: amd64, values:", "  arch: {values:").replace(
        "axes: {os: [deb12], arch: [amd64, arm64]}", "axes: {os: [deb12]}")
    (err,) = run_plan(tmp_path, text, capsys)
    assert "image app does not span axis arch, and axis arch has no default" in err


def test_every_problem_is_listed_at_once(tmp_path, capsys):
    text = (BASIC.replace("recipe: images/app", "recipe: images/nope")
            .replace("    base: base\n", "    base: nobase\n")
            .replace('tag: "app-{version}"', 'tag: "{arch}"'))
    errors = run_plan(tmp_path, text, capsys)
    lines = {line_of(text, "images/nope"), line_of(text, "base: nobase"),
             line_of(text, 'tag: "{arch}"')}
    assert len(errors) == len(lines)
    assert {int(e.split(":")[1]) for e in errors} == lines


def test_missing_matrix_file(tmp_path, capsys):
    assert main(["plan", "--matrix", str(tmp_path / "matrix.yaml")]) == BAD_INPUT
    assert "file not found; pass --matrix" in capsys.readouterr().err


def test_the_command_line_exits_2_without_traceback(tmp_path):
    """The real entry point, as CI and users call it."""
    matrix = write(tmp_path, BASIC.replace("kind: app", "kind: ap"))
    done = subprocess.run([sys.executable, "-m", "pipeline", "plan", "--matrix", str(matrix)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == BAD_INPUT
    assert done.stdout == ""
    where = f"{matrix}:{line_of(BASIC, 'kind: app')}"
    assert f"{where}: images[1].kind: 'ap' is not one of" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("content,expected", [
    (None, "is not a file"),
    (b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "is not a PGP private key"),
])
def test_an_unusable_signing_key_stops_the_run_before_anything_is_built(tmp_path, content,
                                                                        expected):
    matrix = write(tmp_path, BASIC)
    key = tmp_path / "signing.key"
    if content is not None:
        key.write_bytes(content)
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--mode", "main", "--matrix",
                           str(matrix), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, check=False,
                          env={**os.environ, "PIPELINE_SIGNING_KEY": str(key)})
    assert done.returncode == BAD_INPUT
    assert f"PIPELINE_SIGNING_KEY: '{key}' {expected}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


# -- recipe.def recipes ----------------------------------------------------------------------
def test_recipe_folder_with_both_recipes(tmp_path, capsys):
    text, files = with_definition()
    files["images/defapp/Dockerfile"] = "FROM scratch\n"
    (err,) = run_plan(tmp_path, text, capsys, files)
    assert err == (f"matrix.yaml:{line_of(text, 'images/defapp')}: image defapp: recipe folder "
                   "'images/defapp' has both a Dockerfile and a recipe.def; keep one")


def test_base_with_a_definition_file(tmp_path, capsys):
    text, files = with_definition(image=DEF_IMAGE + "    base: base\n")
    (err,) = run_plan(tmp_path, text, capsys, files)
    assert err == (f"matrix.yaml:{line_of(text, 'base: base', 2)}: image defapp: its recipe is "
                   "a definition file, whose From: lines name its bases (a tag of this "
                   "catalogue becomes a need); delete base:")


def test_definition_file_problems_name_the_file_and_line(tmp_path, capsys):
    text, files = with_definition("Bootstrap: docker\nFrom: t/base:ompi-4.1\n%setup\n  id\n"
                                  "Bootstrap: localimage\nFrom: /x.sif\n")
    assert run_plan(tmp_path, text, capsys, files) == [
        "images/defapp/recipe.def:3: %setup runs as root on the build host, outside the "
        "container: refused for security; do the work in %post, and copy files in with %files",
        "images/defapp/recipe.def:5: 'Bootstrap: localimage': the factory builds only from "
        "registry images it can pin by digest, and other bootstrap agents read files of the "
        "build host (localimage, oras, yum, debootstrap, ...) or moving sources (library, "
        "shub); write 'Bootstrap: docker'",
    ]
