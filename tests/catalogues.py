"""Small catalogues written to a temporary folder, for the planner's tests."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from pipeline.planning.planner import make_plan

BASIC = """\
repositories: {base: t/base, gpu: t/base, app: t/app}
targets: {local: {registry: "127.0.0.1:5000"}}
axes:
  os:
    default: deb12
    values:
      deb12: {bootstrap: {suite: bookworm, mirror: "http://m"}, defaults: {gcc: "12"}}
      deb13: {bootstrap: {suite: trixie, mirror: "http://m"}, defaults: {gcc: "14"}}
  gcc: {values: ["8", "11", "12", "14"]}
  cuda: {default: none, values: {none: {tag: ""}, "10.2": {}}}
  mpi:
    default: none
    prefix: ""
    values: {none: {tag: ""}, ompi-4.0: {family: openmpi}, ompi-4.1: {family: openmpi}}
  arch: {default: amd64, values: [amd64, arm64]}
constraints:
  - if: {os: deb12}
    then: {gcc: ["8", "11", "12"]}
    reason: deb12 offers gcc 8, 11 and 12
  - if: {cuda: "10.2"}
    then: {gcc: {max: "8"}}
    reason: cuda 10.2 needs gcc 8 at most
images:
  - name: base
    kind: base
    recipe: images/base
    axes: {os: [deb12, deb13], gcc: ["8", "12", "14"], mpi: [none, ompi-4.1], arch: [amd64, arm64]}
  - name: app
    kind: app
    recipe: images/app
    base: base
    axes: {os: [deb12], arch: [amd64, arm64]}
    include: [{mpi: ompi-4.1, version: "2022"}]
    tag: "app-{version}"
"""

# The header of every catalogue the integration tests run on the lab: Debian 12 bootstrapped
# from Debian's mirror, one certainly absent registry image OS, Open MPI 4.1 or none, both
# arches.  Each test adds its own repositories, targets and images (``lab_catalogue``).
LAB_AXES = """\
axes:
  os:
    default: debian12
    values:
      debian12:
        bootstrap: {suite: bookworm, mirror: "http://deb.debian.org/debian"}
        defaults: {gcc: "12"}
      # Absent wherever the tests run, whether Docker Hub can be reached or not.
      rocky8: {image: "127.0.0.1:9/factorytest/absent-os:8", defaults: {gcc: "8"}}
  gcc: {values: ["8", "12"]}
  mpi:
    default: none
    prefix: ""
    values:
      none: {tag: "", family: none, version: ""}
      ompi-4.1: {family: openmpi, version: "4.1"}
  arch: {default: amd64, values: [amd64, arm64]}
"""


def lab_catalogue(base: str, app: str, images: str,
                  targets: str = 'targets: {local: {registry: "127.0.0.1:5000"}}\n') -> str:
    """A catalogue for the lab: the base and app repositories, LAB_AXES and ``images``."""
    repositories = f"repositories: {{base: {base}, gpu: {base}, app: {app}}}\n"
    return repositories + targets + LAB_AXES + textwrap.dedent(images)


RECIPES = {
    "images/base/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
    "images/base/test.sh": "#!/bin/sh\nset -eu\ntrue\n",
    "images/app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n",
    "images/gpu/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
}


def write(folder: Path, text: str = BASIC, files: dict | None = None) -> Path:
    """Write matrix.yaml and recipe files into ``folder``; return matrix.yaml's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in {**RECIPES, **(files or {})}.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    matrix = folder / "matrix.yaml"
    matrix.write_text(textwrap.dedent(text))
    return matrix


def plan(matrix: Path, mode: str = "pr", changed_from: str | None = None, select=None) -> dict:
    """The plan as {job id: job}."""
    return {j.id: j for j in make_plan(matrix, mode, changed_from, select)}


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the nth occurrence of ``needle`` in ``text``."""
    seen = 0
    for number, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == nth:
                return number
    raise AssertionError(f"{needle!r} not in text")


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True,
                          text=True).stdout


def init_repo(folder: Path) -> None:
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "test@example.invalid")
    git(folder, "config", "user.name", "test")
    commit(folder, "initial")


def commit(folder: Path, message: str) -> str:
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "--allow-empty", "-m", message)
    return git(folder, "rev-parse", "HEAD").strip()


# An app built from an Apptainer definition file (``recipe.def``) instead of a Dockerfile:
# two stages, both FROM a tag BASIC's base image publishes (``ompi-4.1``: debian 12, its
# default gcc 12, Open MPI 4.1), the first named, with a comment after its From:.
DEF_IMAGE = """\
  - name: defapp
    kind: app
    recipe: images/defapp
    axes: {os: [deb12], arch: [amd64, arm64]}
    include: [{mpi: ompi-4.1}]
    tag: defapp
"""

DEF_RECIPE = """\
Bootstrap: docker
From: t/base:ompi-4.1     # a tag this catalogue publishes
Stage: build

%post
    . /.singularity.d/env/10-docker*.sh
    mpicc -o /opt/app/bin/hello hello.c

Bootstrap: docker
From: t/base:ompi-4.1
%files from build
    /opt/app /opt/app
%environment
    export PATH=/opt/app/bin:$PATH
%test
    /opt/app/bin/hello
"""


def with_definition(recipe: str = DEF_RECIPE, text: str = BASIC,
                    image: str = DEF_IMAGE) -> tuple[str, dict]:
    """``text`` with the image ``image`` appended, and the recipe files for ``write``."""
    return text + image, {"images/defapp/recipe.def": recipe,
                          "images/defapp/test.sh": "#!/bin/sh\ntrue\n"}
