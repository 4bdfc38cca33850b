"""matrix.yaml's ``commands:``: what an image offers its users, checked like every key.

The published catalogue lists them; clusters make a module wrapper and singularity-hpc an
alias of each, so they must be plain command names.  Left out: the kind's default.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.catalogue.model import default_commands
from pipeline.catalogue.validation import load_catalogue
from pipeline.cli import main
from pipeline.planning.recipe_files import WorkTree
from tests.catalogues import BASIC, line_of, plan, write

REPO = Path(__file__).resolve().parents[2]
APP = '    tag: "app-{version}"\n'


@pytest.mark.parametrize(("commands", "expected"), [
    ("[bin/lmp]", "images[1].commands[0]: 'bin/lmp' is not valid here: give a command's "
                  "file name (letters, digits, '.', '_', '+' and '-', no path), e.g. lmp or "
                  "gmx_mpi"),
    ("[lmp, lmp]", "images[1].commands lists a value twice; keep one"),
    ("lmp", "images[1].commands must be a list, not 'lmp'"),
    ('["-rf"]', "images[1].commands[0]: '-rf' is not valid here: give a command's file name "
                "(letters, digits, '.', '_', '+' and '-', no path), e.g. lmp or gmx_mpi"),
])
def test_a_bad_commands_list_is_bad_input_at_its_line(tmp_path, capsys, commands, expected):
    text = BASIC.replace(APP, APP + f"    commands: {commands}\n")
    matrix = write(tmp_path, text)
    assert main(["plan", "--matrix", str(matrix)]) == 2
    err = capsys.readouterr().err.replace(str(matrix), "matrix.yaml")
    assert err.splitlines()[0] == f"matrix.yaml:{line_of(text, 'commands:')}: {expected}"
    assert "Traceback" not in err


def test_commands_as_given_else_the_kind_s_default(tmp_path):
    text = BASIC.replace(APP, APP + "    commands: [gmx, gmx_mpi]\n")
    catalogue = load_catalogue(WorkTree(write(tmp_path, text).parent), "matrix.yaml")
    app, base = catalogue.image("app"), catalogue.image("base")
    mpi, none = {"mpi": "ompi-4.1", "mpi_family": "openmpi"}, {"mpi": "none"}
    assert app.commands_of(mpi) == ("gmx", "gmx_mpi")
    assert (base.commands_of(mpi), base.commands_of(none)) == (("mpicc", "mpirun"), ())
    assert default_commands("gpu", mpi) == ("nvcc", "mpicc", "mpirun")
    assert default_commands("gpu", {"mpi": "mpich-4.0"}) == ("nvcc", "mpicc", "mpirun")
    assert default_commands("app", mpi) == ()


def test_commands_are_not_part_of_any_build_id(tmp_path):
    before = plan(write(tmp_path / "a"))
    after = plan(write(tmp_path / "b", BASIC.replace(APP, APP + "    commands: [x]\n")))
    assert {i: j.build_id for i, j in before.items()} == {i: j.build_id for i, j in after.items()}


def test_the_shipped_applications_name_the_commands_their_packages_install():
    catalogue = load_catalogue(WorkTree(REPO), "matrix.yaml")
    assert {i.name: i.commands for i in catalogue.images if i.kind == "app"} == {
        "lammps": ("lmp",), "gromacs": ("gmx", "gmx_mpi"), "pi-mpi": ("pi-mpi",),
        "openfoam": ("blockMesh", "icoFoam", "simpleFoam", "decomposePar", "reconstructPar")}
