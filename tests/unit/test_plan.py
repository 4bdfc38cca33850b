"""The plan: ids, needs, order, build_id and its propagation, selection, the JSON contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.catalogues import BASIC, plan, write

REPO = Path(__file__).resolve().parents[2]
JSON_KEYS = ["id", "image", "kind", "repository", "tag", "arch", "variables", "recipe", "needs",
             "build_id", "action", "reason", "recipe_file", "sources"]


def test_app_needs_the_base_cell_with_the_same_axis_values(tmp_path):
    jobs = plan(write(tmp_path))
    app = jobs["t/app:app-2022@arm64"]
    # deb12's default gcc is 12; the include put Open MPI 4.1 on the app's cells.
    assert app.needs == ("t/base:ompi-4.1@arm64",)
    assert jobs["t/app:app-2022@amd64"].needs == ("t/base:ompi-4.1@amd64",)
    assert app.variables["version"] == "2022"
    assert app.variables["mpi_family"] == "openmpi"


def test_jobs_come_after_everything_they_need(tmp_path):
    text = BASIC.replace("images:\n", "images:\n"
                         "  - name: top\n    kind: app\n    recipe: images/app\n"
                         "    base: app\n    axes: {os: [deb12], arch: [amd64]}\n"
                         "    include: [{mpi: ompi-4.1, version: '2022'}]\n"
                         "    tag: 'top-{version}'\n")
    order = [j.id for j in plan(write(tmp_path, text)).values()]
    for position, job_id in enumerate(order):
        for need in plan(write(tmp_path, text))[job_id].needs:
            assert order.index(need) < position
    assert order[-1] == "t/app:top-2022@amd64"


def test_build_id_is_stable_and_independent_of_where_the_checkout_is(tmp_path):
    first = plan(write(tmp_path / "a"))
    second = plan(write(tmp_path / "b"))
    assert {i: j.build_id for i, j in first.items()} == {i: j.build_id for i, j in second.items()}
    assert len({j.build_id for j in first.values()}) == len(first)


def test_base_recipe_change_propagates_to_every_app_on_it(tmp_path):
    before = plan(write(tmp_path))
    (tmp_path / "images/base/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN x\n")
    after = plan(tmp_path / "matrix.yaml")
    assert all(before[i].build_id != after[i].build_id for i in after)


def test_app_recipe_change_leaves_bases_alone(tmp_path):
    before = plan(write(tmp_path))
    (tmp_path / "images/app/extra.txt").write_text("new file in the recipe folder\n")
    after = plan(tmp_path / "matrix.yaml")
    changed = {i for i in after if before[i].build_id != after[i].build_id}
    assert changed == {"t/app:app-2022@amd64", "t/app:app-2022@arm64"}


def test_file_mode_is_an_input(tmp_path):
    before = plan(write(tmp_path))
    (tmp_path / "images/base/test.sh").chmod(0o755)
    after = plan(tmp_path / "matrix.yaml")
    assert before["t/base:deb12@amd64"].build_id != after["t/base:deb12@amd64"].build_id


def test_extra_inputs_go_into_the_build_id(tmp_path):
    text = BASIC.replace("    recipe: images/app\n",
                         "    recipe: images/app\n    inputs: [shared]\n")
    matrix = write(tmp_path, text, {"shared/hello.c": "int main(void){return 0;}\n"})
    before = plan(matrix)
    (tmp_path / "shared/hello.c").write_text("int main(void){return 1;}\n")
    after = plan(matrix)
    assert {i for i in after if before[i].build_id != after[i].build_id} == {
        "t/app:app-2022@amd64", "t/app:app-2022@arm64"}


def test_select_keeps_matches_and_what_they_need(tmp_path):
    jobs = plan(write(tmp_path), select=["*app-*@arm64"])
    assert list(jobs) == ["t/base:ompi-4.1@arm64", "t/app:app-2022@arm64"]
    assert "needs it" in jobs["t/base:ompi-4.1@arm64"].reason
    assert set(plan(tmp_path / "matrix.yaml", select=["*@arm64", "t/base:deb13@*"])) == {
        i for i in plan(tmp_path / "matrix.yaml")
        if i.endswith("@arm64") or i.startswith("t/base:deb13@")}


def test_json_contract(tmp_path, capsys):
    matrix = write(tmp_path)
    assert main(["plan", "--matrix", str(matrix), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "pr"
    assert [list(job) for job in data["jobs"]] == [JSON_KEYS] * len(data["jobs"])
    app = next(j for j in data["jobs"] if j["id"] == "t/app:app-2022@amd64")
    assert app["needs"] == ["t/base:ompi-4.1@amd64"] and app["recipe"] == "images/app"
    assert app["action"] == "build" and app["reason"]


def test_table_groups_by_image_with_actions_and_reasons(tmp_path, capsys):
    assert main(["plan", "--matrix", str(write(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "base (base)" in out and "app (app)" in out
    assert out.count("app (app)") == 1  # one group, not a label per row
    assert "every cell is built" in out
    assert "22 jobs: 22 build, 0 skip" in out


# -- the shipped catalogue -------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    return plan(REPO / "matrix.yaml", mode="nightly")


def test_shipped_catalogue_plans_every_kind_and_both_arches(shipped):
    kinds = {j.kind for j in shipped.values()}
    assert kinds == {"base", "gpu", "app"}
    assert {j.arch for j in shipped.values()} == {"amd64", "arm64"}
    debian = [j for j in shipped.values() if j.image == "base"]
    # Debian 12 and 13 x the GCC versions each offers (2) x {none, openmpi, mpich} x 2 arches.
    assert len(debian) == 2 * 2 * 3 * 2
    assert {j.variables["os_source"] for j in debian} == {"bootstrap"}


def test_shipped_catalogue_has_production_oses_and_cuda(shipped):
    assert "sjtuhpc/hpc-base-container:gcc-11.cuda-11.8.ompi-4.1@amd64" in shipped
    assert "sjtuhpc/hpc-base-container:cuda-10.2.ompi-4.1-rocky8@amd64" in shipped
    assert "sjtuhpc/hpc-base-container:cuda-10.2.ompi-4.1-rocky8@arm64" not in shipped
    rocky = shipped["sjtuhpc/hpc-base-container:ompi-4.1-rocky8@amd64"]
    assert rocky.variables["os_image"] == "docker.io/library/rockylinux:8"


def test_shipped_apps_build_on_matching_base_cells(shipped):
    apps = [j for j in shipped.values() if j.kind == "app"]
    assert {j.tag for j in apps} >= {"lammps-gnu-2022", "gromacs-gnu-2022", "openfoam-gnu-1912"}
    for app in apps:
        (need,) = app.needs
        base = shipped[need]
        assert base.arch == app.arch and base.variables["os"] == app.variables["os"]
        assert base.variables["mpi_family"] == "openmpi"
        assert app.repository == "sjtuhpc/hpc-app-container"


def test_every_shipped_recipe_has_a_test_script(shipped):
    for recipe in {j.recipe for j in shipped.values()}:
        if (REPO / recipe / "recipe.def").is_file():  # its %test is in the definition file
            assert "\n%test\n" in (REPO / recipe / "recipe.def").read_text(), recipe
            continue
        script = REPO / recipe / "test.sh"
        assert script.is_file(), recipe
        assert "set -eu" in script.read_text()
