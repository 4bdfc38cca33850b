"""The tags of ``DIR/catalog.json`` that get a module, read and checked.

The catalogue is text from elsewhere: names that become file and folder names (the module's
name and version, the commands, the SIF's path) must be plain names, or a tag could write
outside the site folder; every other value (description, versions, URLs) is kept as text
and only ever reaches a modulefile or a script quoted (``quoting``).  A tag gets a module
when at least one of its arches has a SIF in the slice.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from pipeline.cluster import layout
from pipeline.errors import Problems

# A module name, version or command: one file name that no shell, Lua or Tcl reads as more.
PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                        r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
BLOB = re.compile(r"sha256:[0-9a-f]{64}")
# The catalogue's arch (a Docker platform's) -> what ``uname -m`` says on such a node.
MACHINES = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x",
            "riscv64": "riscv64"}
SHOWN = 60  # characters of a bad value an error message shows
MPI_NAMES = {"openmpi": "Open MPI", "mpich": "MPICH"}


@dataclass(frozen=True)
class Sif:
    arch: str  # amd64
    machine: str  # x86_64
    path: str  # relative to the site folder, as layout.sif_path puts it
    blob: str  # sha256:<hex>, the file's digest


@dataclass(frozen=True)
class Entry:
    """One tag of the slice, as its module and wrappers need it."""

    name: str  # the module's name without the site's prefix: lammps
    version: str  # gnu-2022
    repository: str
    tag: str
    kind: str  # base, gpu or app
    description: str
    commands: tuple
    os: str
    gcc: str
    mpi_family: str  # openmpi, mpich or none
    mpi_version: str
    cuda: str  # "none" or a version
    source: str  # "URL at REVISION"
    created: str
    sifs: tuple  # Sif, one per arch with a SIF, sorted by arch

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def gpu(self) -> bool:
        """GPU images run with ``--nv``: the gpu kind, and apps built on one (a CUDA cell)."""
        return self.kind == "gpu" or self.cuda not in ("", "none")

    @property
    def mpi(self) -> str:
        """``Open MPI 4.1``, ``MPICH 4.2``, or ``none``."""
        if self.mpi_family not in MPI_NAMES:
            return self.mpi_family or "none"
        return f"{MPI_NAMES[self.mpi_family]} {self.mpi_version}".strip()

    @property
    def variable(self) -> str:
        """The prefix of the environment variables the module sets: ``LAMMPS`` (``_SIF``...)."""
        upper = re.sub(r"[^A-Za-z0-9]", "_", self.name).upper()
        return f"_{upper}" if upper[0].isdigit() else upper


def read(dest: Path) -> list[Entry]:
    """The entries of ``DIR/catalog.json`` with a SIF, sorted by module; InputError on a file
    that is missing, not JSON, or names that cannot be paths."""
    file = dest / layout.CATALOG
    problems = Problems(str(file))
    try:
        catalog = json.loads(file.read_text())
    except FileNotFoundError:
        problems.add(None, "not found; run `python -m pipeline cluster pull --dest "
                           f"{dest}` (or `cluster import`) first")
        problems.raise_if_any()
    except (OSError, UnicodeDecodeError, ValueError) as err:
        problems.add(None, f"cannot be read as JSON ({err}); pull the catalogue again")
        problems.raise_if_any()
    return entries(catalog, dest, problems)


def entries(catalog, dest: Path, problems: Problems) -> list[Entry]:
    """``catalog``'s images as entries (see :func:`read`); problems go to ``problems``."""
    images = catalog.get("images") if isinstance(catalog, dict) else None
    if not isinstance(images, list):
        problems.add(None, "has no list of images; pull the catalogue again")
        problems.raise_if_any()
    found: dict = {}
    for image in images:
        entry = _entry(image, dest, problems)
        if entry is None:
            continue
        module = f"{entry.name}/{entry.version}"
        if module in found:
            problems.add(None, f"{entry.image} and {found[module].image} are both module "
                               f"{module}; keep one of them in the slice")
            continue
        found[module] = entry
    problems.raise_if_any()
    return [found[m] for m in sorted(found)]


def _entry(image, dest: Path, problems: Problems) -> Entry | None:
    if not isinstance(image, dict):
        problems.add(None, f"an image must be a mapping, not {_short(image)}")
        return None
    where = f"image {_short(image.get('repository'))}:{_short(image.get('tag'))}"
    wrong = _naming_problems(image)
    if wrong:
        problems.add(None, f"{where}: " + "; ".join(wrong))
        return None
    sifs = _sifs(image, dest, where, problems)
    if not sifs:
        return None
    variables = image.get("variables") if isinstance(image.get("variables"), dict) else {}
    source = image.get("source") if isinstance(image.get("source"), dict) else {}
    name, version = layout.module_parts(image)
    return Entry(
        name=name, version=version, repository=image["repository"], tag=image["tag"],
        kind=text(image.get("kind")), description=text(image.get("description")),
        commands=tuple(image.get("commands") or ()), os=text(variables.get("os")),
        gcc=text(variables.get("gcc")),
        mpi_family=text(variables.get("mpi_family")) or "none",
        mpi_version=text(variables.get("mpi_version")),
        cuda=text(variables.get("cuda")) or "none",
        source=" at ".join(t for t in (text(source.get("url")), text(source.get("revision")))
                           if t),
        created=text(image.get("created")), sifs=tuple(sifs))


def _naming_problems(image: dict) -> list[str]:
    """What is wrong with the values of ``image`` that become paths."""
    wrong = []
    if not isinstance(image.get("repository"), str) or not REPOSITORY.fullmatch(
            image["repository"]):
        wrong.append("its repository is not a registry repository name")
    if not isinstance(image.get("tag"), str) or not TAG.fullmatch(image["tag"]):
        wrong.append("its tag is not a tag")
    module = image.get("module")
    name, version = layout.module_parts(image) if isinstance(module, str) else ("", "")
    if not (PLAIN.fullmatch(name) and PLAIN.fullmatch(version)):
        wrong.append(f"its module {_short(module)} is not NAME/VERSION of letters, digits "
                     "and ._+-")
    if not isinstance(image.get("name"), str) or not PLAIN.fullmatch(image["name"]):
        wrong.append(f"its name {_short(image.get('name'))} is not a plain name")
    commands = image.get("commands") or []
    if not isinstance(commands, list) or not all(
            isinstance(c, str) and PLAIN.fullmatch(c) for c in commands):
        wrong.append(f"its commands {_short(commands)} are not plain command names")
    if not isinstance(image.get("arches"), dict):
        wrong.append("it has no arches")
    return wrong


def _sifs(image: dict, dest: Path, where: str, problems: Problems) -> list[Sif]:
    """The SIFs of ``image``'s arches, where the slice has one."""
    sifs = []
    for arch, facts in sorted(image["arches"].items()):
        sif = facts.get("sif") if isinstance(facts, dict) else None
        if sif is None:
            continue  # not pulled, or not published for this arch
        if arch not in MACHINES:
            problems.add(None, f"{where}: arch {_short(arch)} is none of {', '.join(MACHINES)}")
            continue
        if not isinstance(sif, dict) or not BLOB.fullmatch(str(sif.get("blob"))):
            problems.add(None, f"{where}: the {arch} SIF has no blob sha256:<64 hex digits>")
            continue
        path = layout.sif_path(dest, image, arch).relative_to(dest).as_posix()
        sifs.append(Sif(arch, MACHINES[arch], path, sif["blob"]))
    return sifs


def text(value) -> str:
    """A catalogue value as one line of text: whitespace runs (newlines too) become one
    space and other control characters go; what is left is kept, quoted where it is used."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value)
    value = "".join(c for c in value if c.isspace() or unicodedata.category(c) != "Cc")
    return " ".join(value.split())


def _short(value) -> str:
    """``value`` for a one-line error message: as it is when it is a printable word, else
    quoted with control characters escaped; cut when long."""
    plain = isinstance(value, str) and value.isprintable() and value and " " not in value
    shown = value if plain else json.dumps(value)
    return shown if len(shown) <= SHOWN else shown[:SHOWN - 3] + "..."
