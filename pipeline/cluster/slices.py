"""The site's ``catalog.json``: the slice of the published catalogue that is on the site.

A slice has the published catalogue's shape (schema 1), with only the tags that have a SIF
on the site and, in each, only the arches whose SIF is there.  Pulls and imports add to it:
per tag and arch the newest entry placed wins, and an entry the site had stays while its
SIF is still in place (a tag pulled last week, or the older SIF of a tag whose new one was
refused).  It is what the modulefiles are written from (``modules``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.cluster import source
from pipeline.cluster.layout import CATALOG, KEYS, sif_path
from pipeline.published.catalog import write_catalog

Kept = dict[tuple[str, str], set[str]]  # (repository, tag) -> arches


def present(catalog: dict, kept: Kept) -> dict:
    """``catalog`` with only the tags and arches in ``kept``."""
    images = []
    for image in catalog["images"]:
        arches = kept.get((image["repository"], image["tag"]))
        if arches:
            images.append({**image, "arches": {arch: entry for arch, entry
                                               in image["arches"].items() if arch in arches}})
    return {**catalog, "images": images}


def merge(site: dict | None, new: dict, dest: Path) -> dict:
    """``new`` (a slice) over the site's slice: the site's entries whose SIF is still in
    place stay, unless ``new`` has that tag and arch."""
    by_tag: dict[tuple[str, str], dict] = {}
    for image in (site or {}).get("images", []):
        arches = {arch: entry for arch, entry in image["arches"].items()
                  if entry.get("sif") and sif_path(dest, image, arch).is_file()}
        if arches:
            by_tag[(image["repository"], image["tag"])] = {**image, "arches": arches}
    for image in new["images"]:
        key = (image["repository"], image["tag"])
        arches = {**by_tag[key]["arches"], **image["arches"]} if key in by_tag \
            else image["arches"]
        by_tag[key] = {**image, "arches": dict(sorted(arches.items()))}
    repositories = {*(site or {}).get("repositories", []), *new["repositories"]}
    return {**new, "repositories": sorted(repositories),
            "images": [by_tag[key] for key in sorted(by_tag)]}


def read_site(dest: Path) -> dict | None:
    """The site's slice, None when it has none yet."""
    path = dest / CATALOG
    if not path.exists():
        return None
    return source.parse(path.read_bytes(), str(path))


def write(dest: Path, catalog: dict) -> Path:
    """Write ``DEST/catalog.json`` (+ ``.sha256``, as ``catalog`` writes them: the same
    format and key order) and the public key of a signed slice (``keys/``)."""
    signing = catalog.get("signing")
    if signing:
        write_atomic(dest / KEYS / f"{signing['fingerprint']}.asc",
                     signing["public_key"].encode())
    return write_catalog(catalog, dest)[0]


def write_atomic(path: Path, content: bytes) -> None:
    """``content`` into ``path`` through a temporary file renamed over it: readers see the
    old file or the new one, never half of one (also after a crash: it is synced first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
