"""Which SIFs of the catalogue a cluster command wants: ``--select`` and ``--arch``.

``--select`` takes the same comma-separated fnmatch globs as ``plan --select``, matched
against ``repository:tag`` (``sjtuhpc/hpc-app-container:lammps-*``); none means every tag.
``--arch`` is one arch or several, comma-separated; none means this machine's.

Every selected tag and arch gives a :class:`Wanted`.  A tag the catalogue has no entry for
in that arch (the matrix does not build it there) is ``not_built``: listed, not a failure.
A tag built for the arch but without a SIF there (``sif_missing``) is wanted all the same,
and its report row says why it is missing: the command then ends with exit code 1, since
not everything selected is on the site.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from fnmatch import fnmatchcase

from pipeline.errors import InputError, Problem
from pipeline.planning.selection import parse_globs

MACHINE_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Wanted:
    image: dict  # the catalogue's entry
    arch: str
    not_built: bool = False  # the tag has no entry for this arch

    @property
    def label(self) -> str:
        return f"{self.image['repository']}:{self.image['tag']}"

    @property
    def entry(self) -> dict | None:
        return self.image["arches"].get(self.arch)

    @property
    def sif(self) -> dict | None:
        return (self.entry or {}).get("sif")


def machine_arch(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    if machine.lower() not in MACHINE_ARCHES:
        raise InputError([Problem("--arch", None, f"this machine is '{machine}', which no "
                                  "catalogue arch names; give --arch amd64 or --arch arm64")])
    return MACHINE_ARCHES[machine.lower()]


def parse_arches(text: str | None) -> list[str]:
    return [a.strip() for a in text.split(",") if a.strip()] if text else [machine_arch()]


def select(catalog: dict, globs: list[str], arches: list[str]) -> list[Wanted]:
    """What ``globs`` and ``arches`` pick, in the catalogue's order (repository, tag)."""
    images = catalog["images"]
    labels = [f"{i['repository']}:{i['tag']}" for i in images]
    problems = [Problem("--select", None, f"'{g}' matches no tag of the catalogue; tags look "
                        f"like {labels[0] if labels else 'repository:tag'}")
                for g in globs if not any(fnmatchcase(label, g) for label in labels)]
    known = sorted({arch for image in images for arch in image["arches"]})
    problems += [Problem("--arch", None, f"'{a}' is no arch of the catalogue (it has "
                         f"{', '.join(known) or 'none'})") for a in arches if a not in known]
    if problems:
        raise InputError(problems)
    chosen = [i for i, label in zip(images, labels, strict=True)
              if not globs or any(fnmatchcase(label, g) for g in globs)]
    wanted = [Wanted(image, arch, not_built=arch not in image["arches"])
              for image in chosen for arch in arches]
    if all(w.not_built for w in wanted):
        raise InputError([Problem("--arch", None, f"no selected tag is built for "
                                  f"{', '.join(arches)}")])
    return wanted


def globs_of(text: str | None) -> list[str]:
    return parse_globs(text) if text else []
