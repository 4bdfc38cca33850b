"""``catalog.json``: every published tag of the catalogue's repositories, as one document.

The document (schema 1, ``catalog.schema.json`` beside this module, described field by
field there) is made from the target registry alone (``reading.py``) and written so that
the same registry gives the same bytes: keys sorted, images sorted by repository and tag,
no wall-clock time anywhere (``created`` is each tag's own, the source commit's time).
``catalog.json.sha256`` beside it is in ``sha256sum`` format, so a site checks a copy with
``sha256sum -c catalog.json.sha256``.

It is pushed to ``<registry>/<namespace>/catalog`` (``artifact.py``): the namespace is the
one the repositories share (``Scope.catalog_repository``); a catalogue whose repositories
are in several namespaces has no single place for it and is refused.

Example::

    catalog = build_catalog(Registry("127.0.0.1:5000"), Scope.of(catalogue, target))
    write_catalog(catalog, Path("out/site"))   # catalog.json, catalog.json.sha256
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.catalogue.model import Catalogue, Target
from pipeline.catalogue.schema import packaged_validator, where
from pipeline.errors import InputError, Problem
from pipeline.published.reading import read_repository
from pipeline.tools.registry.client import Registry

SCHEMA = 1
GENERATOR = "hpc-container-factory"
CATALOG = "catalog.json"
CHECKSUM = CATALOG + ".sha256"


@dataclass(frozen=True)
class Scope:
    """What a catalogue covers: a target and matrix.yaml's image repositories."""

    target: Target
    repositories: tuple  # sorted, each once
    kinds: dict = field(default_factory=dict)  # repository -> kind, for unrecorded tags
    where: str = "matrix.yaml"  # the catalogue file, for messages

    @classmethod
    def of(cls, catalogue: Catalogue, target: Target) -> Scope:
        """matrix.yaml's repositories: ``repositories:`` and the images' own."""
        repositories = set(catalogue.repositories.values()) | {
            image.repository for image in catalogue.images}
        kinds: dict = {}
        for kind in ("gpu", "base", "app"):  # a repository of two kinds: the later wins
            kinds.update({r: kind for k, r in catalogue.repositories.items() if k == kind})
        return cls(target, tuple(sorted(repositories)), kinds, catalogue.file)

    @property
    def catalog_repository(self) -> str:
        """``<namespace>/catalog``, where the catalogue is pushed; InputError when the
        repositories are in several namespaces (there is no single place for it)."""
        namespaces = sorted({r.split("/", 1)[0] for r in self.repositories})
        if len(namespaces) != 1:
            raise InputError([Problem(self.where, None, (
                "the published catalogue goes to <registry>/<namespace>/catalog, so every "
                "repository must be in one namespace; these are in "
                f"{', '.join(namespaces) or 'none'}: move them under one (repositories:, "
                "images[].repository)"))])
        return f"{namespaces[0]}/catalog"


def build_catalog(registry: Registry, scope: Scope, signing: dict | None = None) -> dict:
    """The catalogue of what ``registry`` (the target's) holds for ``scope``."""
    catalog_repo = scope.catalog_repository
    images = [record for repository in scope.repositories
              for record in read_repository(registry, repository, scope.kinds)]
    return {
        "schema": SCHEMA, "generator": GENERATOR,
        "target": {"name": scope.target.name, "registry": scope.target.registry},
        "catalog": f"{scope.target.registry}/{catalog_repo}",
        "repositories": list(scope.repositories), "signing": signing,
        "images": sorted(images, key=lambda r: (r["repository"], r["tag"])),
    }


def catalog_bytes(catalog: dict) -> bytes:
    """The file's bytes: the same catalogue always gives the same ones."""
    return (json.dumps(catalog, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            ).encode()


def write_catalog(catalog: dict, out: Path) -> list[Path]:
    """``out/catalog.json`` and ``out/catalog.json.sha256`` (each replaced whole)."""
    body = catalog_bytes(catalog)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in ((CATALOG, body),
                       (CHECKSUM, f"{hashlib.sha256(body).hexdigest()}  {CATALOG}\n".encode())):
        path = out / name
        partial = path.with_name(name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)
        written.append(path)
    return written


def catalog_problems(catalog) -> list[str]:
    """Where ``catalog`` (parsed JSON) breaks ``catalog.schema.json``: one line each, with
    the path of the value (``images[2].arches.amd64.sif.blob: ...``); empty when valid."""
    validator = packaged_validator("pipeline.published", "catalog.schema.json")
    problems = []
    for found in sorted(validator.iter_errors(catalog), key=lambda e: list(map(str, e.path))):
        # oneOf (null or an object): the object's own, deepest error says the most
        deepest = max(found.context or [found], key=lambda e: len(e.absolute_path))
        problems.append(f"{where(tuple(deepest.absolute_path))}: {deepest.message}")
    return problems
