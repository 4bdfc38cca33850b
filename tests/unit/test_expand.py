"""Expansion: product of axes, exclude, include (GitHub Actions semantics), defaults,
constraints."""

from __future__ import annotations

from pipeline.catalogue.validation import load_catalogue
from pipeline.planning.expansion import expand
from pipeline.planning.recipe_files import WorkTree
from tests.catalogues import BASIC, write


def cells_of(tmp_path, text=BASIC, image="base"):
    write(tmp_path, text)
    catalogue = load_catalogue(WorkTree(tmp_path), "matrix.yaml")
    return expand(catalogue.image(image), catalogue)


def values(expansion, *axes):
    return sorted(tuple(c.values[a] for a in axes) for c in expansion.cells)


def test_product_filtered_by_constraints(tmp_path):
    result = cells_of(tmp_path)
    # deb12 offers 8 and 12 of the spanned 8/12/14; deb13 has no constraint.
    assert values(result, "os", "gcc") == sorted(
        [("deb12", g) for g in ("8", "12") for _ in range(4)]
        + [("deb13", g) for g in ("8", "12", "14") for _ in range(4)])
    assert result.combinations == 24
    assert sum(result.removed.values()) == 4
    assert list(result.removed) == ["constraint 'deb12 offers gcc 8, 11 and 12' (line 17)"]


def test_unspanned_axes_take_the_os_default_then_the_axis_default(tmp_path):
    text = BASIC.replace('gcc: ["8", "12", "14"], ', "")
    result = cells_of(tmp_path, text)
    gcc_by_os = {c.values["os"]: c.values["gcc"] for c in result.cells}
    assert gcc_by_os == {"deb12": "12", "deb13": "14"}
    assert {c.values["cuda"] for c in result.cells} == {"none"}


def test_exclude_removes_every_matching_combination(tmp_path):
    text = BASIC.replace(
        "mpi: [none, ompi-4.1], arch: [amd64, arm64]}\n",
        "mpi: [none, ompi-4.1], arch: [amd64, arm64]}\n"
        "    exclude: [{os: deb13, arch: arm64}, {gcc: \"8\", mpi: none}]\n", 1)
    result = cells_of(tmp_path, text)
    assert not [c for c in result.cells
                if c.values["os"] == "deb13" and c.values["arch"] == "arm64"]
    assert not [c for c in result.cells if c.values["gcc"] == "8" and c.values["mpi"] == "none"]
    assert len(result.cells) == 20 - 6 - 3  # 6 deb13/arm64, then 3 more gcc-8/none


def test_include_adds_keys_to_matching_cells_without_overwriting(tmp_path):
    text = BASIC.replace(
        "mpi: [none, ompi-4.1], arch: [amd64, arm64]}\n",
        "mpi: [none, ompi-4.1], arch: [amd64, arm64]}\n"
        "    include:\n"
        "      - {flavour: plain}\n"
        "      - {mpi: ompi-4.1, flavour: mpi}\n", 1)
    result = cells_of(tmp_path, text)
    assert len(result.cells) == 20  # nothing new: both entries matched existing cells
    for cell in result.cells:
        assert cell.extras["flavour"] == ("mpi" if cell.values["mpi"] == "ompi-4.1" else "plain")


def test_include_that_matches_nothing_adds_a_cell_per_arch(tmp_path):
    text = BASIC.replace(
        "mpi: [none, ompi-4.1], arch: [amd64, arm64]}\n",
        "mpi: [none, ompi-4.1], arch: [amd64, arm64]}\n"
        "    include: [{os: deb12, gcc: \"12\", mpi: ompi-4.0}]\n", 1)
    result = cells_of(tmp_path, text)
    added = [c for c in result.cells if c.values["mpi"] == "ompi-4.0"]
    assert sorted(c.values["arch"] for c in added) == ["amd64", "arm64"]
    assert all(c.values["gcc"] == "12" and c.values["os"] == "deb12" for c in added)


def test_version_range_constraint_compares_at_the_bounds_precision(tmp_path):
    text = BASIC.replace('gcc: {values: ["8", "11", "12", "14"]}',
                         'gcc: {values: ["8", "8.5", "11", "12", "14"]}').replace(
        'gcc: ["8", "12", "14"], mpi: [none, ompi-4.1]',
        'gcc: ["8", "8.5", "11", "12"], cuda: [none, "10.2"], mpi: [none]').replace(
        'then: {gcc: ["8", "11", "12"]}', 'then: {gcc: ["8", "8.5", "11", "12"]}')
    result = cells_of(tmp_path, text)
    with_cuda = {(c.values["gcc"]) for c in result.cells if c.values["cuda"] == "10.2"}
    assert with_cuda == {"8", "8.5"}  # max "8" admits 8.5, not 11 or 12
