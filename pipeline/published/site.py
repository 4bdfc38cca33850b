"""The published catalogue's folder (``out/site/``), made from the target registry.

One function for both callers, ``python -m pipeline catalog`` and a main/nightly ``run``
after publishing (``pipeline/run/publishing.py``):

1. read the registry into the catalogue (``catalog.build_catalog``) and write
   ``catalog.json`` + ``catalog.json.sha256``;
2. write ``index.html`` (``html.write_page``) and the singularity-hpc entries
   ``registry/<repository>/container.yaml`` (``shpc.write_entries``);
3. with ``push``, push ``catalog.json`` to ``<registry>/<namespace>/catalog`` (``artifact``).

Example::

    site = make_site(registry, Scope.of(catalogue, target), Path("out/site"), push=True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.published.artifact import Pushed, push_catalog
from pipeline.published.catalog import Scope, build_catalog, catalog_bytes, write_catalog
from pipeline.published.signing import signing_of
from pipeline.tools.digests import sha256_bytes
from pipeline.tools.registry.client import Registry

FOLDER = "site"  # under the output folder: out/site/


@dataclass(frozen=True)
class Site:
    catalog: dict
    files: tuple  # every file written, catalog.json first
    pushed: Pushed | None  # None: not pushed


def make_site(registry: Registry, scope: Scope, out: Path, *, push: bool,
              log: Callable[[str], None] = print) -> Site:
    """Steps 1 to 3 (see the module)."""
    catalog = build_catalog(registry, scope, signing_of())
    body = catalog_bytes(catalog)
    files = [*write_catalog(catalog, out), *_pages(catalog, out, sha256_bytes(body))]
    log(f"catalog: {len(catalog['images'])} tag(s) in {len(scope.repositories)} "
        f"repositories; wrote {', '.join(str(f) for f in files)}")
    pushed = None
    if push:
        pushed = push_catalog(registry, scope.catalog_repository, body)
        log(f"catalog: {'pushed' if pushed.changed else 'unchanged'} {pushed.latest} "
            f"({pushed.manifest}, also {pushed.immutable})")
    return Site(catalog, tuple(files), pushed)


def _pages(catalog: dict, out: Path, digest: str) -> list[Path]:
    """index.html (showing catalog.json's ``digest``) and the singularity-hpc entries."""
    from pipeline.published import html, shpc  # noqa: PLC0415 - Jinja2 and YAML on use only
    return [html.write_page(catalog, out, digest), *shpc.write_entries(catalog, out)]
