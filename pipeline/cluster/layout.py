"""Where the cluster commands put things under a site folder (``--dest DIR``).

::

    DIR/catalog.json                      the slice of the catalogue that was pulled
    DIR/site.yaml                         the site's settings (bind paths, module system)
    DIR/keys/                             the factory's public key, when SIFs are signed
    DIR/containers/<repository>/<tag>/<name>-<sha256 hex>.sif
    DIR/modules/<name>/<version>[.lua]    one modulefile per tag (Lmod: .lua; Tcl: none)
    DIR/wrappers/<name>/<version>/bin/    the image's commands, each calling apptainer exec

The SIF's file name carries the digest of its bytes, so a new publication of a tag is a new
file beside the old one (jobs still running keep theirs) and a file is never half of two.
"""

from __future__ import annotations

from pathlib import Path

CATALOG = "catalog.json"
SITE = "site.yaml"
KEYS = "keys"
CONTAINERS = "containers"
MODULES = "modules"
WRAPPERS = "wrappers"


def sif_path(dest: Path, image: dict, arch: str) -> Path:
    """The SIF of ``image`` (a catalogue entry) for ``arch`` under the site folder."""
    blob = image["arches"][arch]["sif"]["blob"].removeprefix("sha256:")
    return dest / CONTAINERS / image["repository"] / image["tag"] / f"{image['name']}-{blob}.sif"


def module_parts(image: dict) -> tuple[str, str]:
    """``("lammps", "gnu-2022")`` from the entry's ``module`` (``lammps/gnu-2022``)."""
    name, _, version = image["module"].partition("/")
    return name, version
