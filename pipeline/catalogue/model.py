"""The catalogue as data: frozen dataclasses for axes, constraints, images and targets.

``pipeline.catalogue.validation`` makes them from matrix.yaml; everything after reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Tree(Protocol):
    """Read access to the catalogue's folder: paths are relative to it, '/'-separated.

    A tree on disk (``WorkTree``) also has ``root``, the folder itself: paths are then also
    checked to stay inside it once symlinks are followed.
    """

    def read_text(self, path: str) -> str | None: ...
    def is_dir(self, path: str) -> bool: ...
    def exists(self, path: str) -> bool: ...
    def files(self, path: str) -> tuple: ...


@dataclass(frozen=True)
class AxisValue:
    """One value of an axis, e.g. ``ompi-4.1`` of ``mpi``, with its attributes."""

    key: str
    tag: str  # the tag component, e.g. "ompi-4.1"; "" for none
    attrs: dict  # scalar attributes, exported as variables <axis>_<attr>
    defaults: dict  # os values only: defaults for other axes (the OS's system GCC)
    line: int | None


@dataclass(frozen=True)
class Axis:
    name: str
    values: dict  # key -> AxisValue, in the order written
    default: str | None
    line: int | None


@dataclass(frozen=True)
class Constraint:
    """``if`` every condition holds, ``then`` each axis must take an allowed value."""

    when: dict  # axis -> tuple of values
    allow: dict  # axis -> tuple of values, or {"min": v, "max": v}
    reason: str
    line: int | None

    def describe(self) -> str:
        return f"constraint '{self.reason}' (line {self.line})"


@dataclass(frozen=True)
class Combination:
    """An include or exclude entry."""

    values: dict
    line: int | None


@dataclass(frozen=True)
class BaseRef:
    image: str
    match: tuple | None  # axes to match; None: the axes the base image spans, and arch
    line: int | None


@dataclass(frozen=True)
class Image:
    name: str
    kind: str
    description: str
    recipe: str
    repository: str
    axes: dict  # axis -> tuple of values this image spans
    include: tuple
    exclude: tuple
    base: BaseRef | None
    tag: str  # tag template
    inputs: tuple  # extra paths folded into the build_id
    line: int | None
    tag_line: int | None
    # URL templates of upstream metadata files (dnf repomd.xml, Debian InRelease) whose
    # content goes into the effective build_id; fields are the cell's variables.
    upstream: tuple = ()
    # The recipe folder's recipe: "Dockerfile", or "recipe.def" (an Apptainer definition
    # file whose From: lines name its bases; pipeline.planning.definition_file).
    recipe_file: str = "Dockerfile"
    # The commands the image offers (matrix.yaml's ``commands:``); None: the kind's default
    # (``commands_of``).  Published with each tag for the catalogue, never in a build_id.
    commands: tuple | None = None

    def commands_of(self, variables: dict) -> tuple:
        """The commands of one cell: ``commands:`` as given, else base images ``mpicc``
        and ``mpirun`` when the cell has an MPI, GPU images ``nvcc`` before those, and
        applications none (what they offer differs for each: say it in matrix.yaml)."""
        if self.commands is not None:
            return self.commands
        return default_commands(self.kind, variables)

    def upstream_urls(self, variables: dict) -> tuple:
        """The ``upstream`` URLs of one cell, e.g. ``.../rhel8/x86_64/repodata/repomd.xml``.

        Validation makes sure that every field is a variable that every cell has."""
        return tuple(template.format_map(variables) for template in self.upstream)


def default_commands(kind: str, variables: dict) -> tuple:
    """The commands of an image of ``kind`` that does not list its own (``commands:``)."""
    if kind == "app":
        return ()
    family = variables.get("mpi_family", variables.get("mpi", "none"))
    mpi = ("mpicc", "mpirun") if family not in ("", "none") else ()
    return ("nvcc", *mpi) if kind == "gpu" else mpi


@dataclass(frozen=True)
class Target:
    name: str
    registry: str
    library_endpoint: str | None
    library_collection: str | None


@dataclass(frozen=True)
class CiRunner:
    """Where CI runs one arch's jobs: matrix.yaml's ``ci.runners.<arch>``.  A key left out
    is None or empty: the factory's default for the arch (``pipeline.ci.levels``)."""

    arch: str
    github: str | None  # the runs-on label
    gitlab: tuple  # runner tags
    timeout_minutes: int | None
    emulated: bool  # no native runner: the jobs run under QEMU on the runner given
    line: int | None


@dataclass(frozen=True)
class Catalogue:
    file: str  # as shown in messages, e.g. "matrix.yaml"
    axes: dict  # name -> Axis, in the order written (the order of tag components)
    constraints: tuple
    images: tuple
    repositories: dict
    targets: dict
    default_target: str
    runners: dict = field(default_factory=dict)  # arch -> CiRunner (matrix.yaml's ci.runners)

    def image(self, name: str) -> Image:
        return next(i for i in self.images if i.name == name)

    def effective_default(self, axis: str, os_key: str | None) -> str | None:
        """The value an image takes on an axis it does not span: the OS's, else the axis'."""
        if os_key is not None and axis != "os":
            os_value = self.axes["os"].values.get(os_key)
            if os_value and axis in os_value.defaults:
                return os_value.defaults[axis]
        return self.axes[axis].default
