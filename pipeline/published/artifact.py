"""``catalog.json`` in the registry: one OCI artifact, so a cluster needs one reference.

``<registry>/<namespace>/catalog`` holds the file as an artifact of one layer
(``artifactType`` and layer ``application/vnd.sjtuhpc.factory.catalog.v1+json``, the empty
config, the layer titled ``catalog.json``), under two tags:

* ``sha256-<first 12 hex digits of the file's sha256>``: immutable, pushed first and never
  overwritten (the same file gives the same tag, so a rerun finds it and keeps it);
* ``latest``: moved to it last.

``oras pull <registry>/<namespace>/catalog:latest`` writes ``catalog.json``;
``pull_catalog`` does the same in Python (the cluster commands load a catalogue by
reference with it).  The manifest is made of the file alone, so the same catalogue is the
same manifest digest on every push.

Example::

    pushed = push_catalog(registry, "sjtuhpc/catalog", body)
    body = pull_catalog(registry, "127.0.0.1:5000/sjtuhpc/catalog:latest")
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pipeline.tools.digests import sha256_bytes
from pipeline.tools.oci_artifacts import OCI_MANIFEST, file_manifest, pull_file, push_file
from pipeline.tools.registry.client import Registry, RegistryError

CATALOG_TYPE = "application/vnd.sjtuhpc.factory.catalog.v1+json"
TITLE = "catalog.json"
LATEST = "latest"


@dataclass(frozen=True)
class Pushed:
    latest: str  # REGISTRY/NAMESPACE/catalog:latest
    immutable: str  # REGISTRY/NAMESPACE/catalog:sha256-<12 hex>
    manifest: str  # the artifact's manifest digest
    changed: bool  # latest named another catalogue (or none) before


def immutable_tag(body: bytes) -> str:
    return "sha256-" + hashlib.sha256(body).hexdigest()[:12]


def push_catalog(registry: Registry, repository: str, body: bytes) -> Pushed:
    """Push ``body`` (catalog.json's bytes) under its immutable tag, then ``latest``.

    An immutable tag that exists already is kept as it is; one holding another file (a
    12-digit collision) is an error, never overwritten."""
    tag = immutable_tag(body)
    manifest = file_manifest(body, CATALOG_TYPE, TITLE, {})
    before = registry.digest(repository, LATEST)
    existing = registry.digest(repository, tag)
    where = f"{registry.host}/{repository}"
    if existing is None:
        digest = push_file(registry, repository, [tag], body, CATALOG_TYPE, TITLE).manifest
    elif existing != sha256_bytes(manifest):
        raise RegistryError(f"{where}:{tag} holds another manifest ({existing}); it is "
                            "immutable and not overwritten")
    else:
        digest = existing
    if before != digest:
        registry.put_manifest(repository, LATEST, manifest, OCI_MANIFEST)
    return Pushed(f"{where}:{LATEST}", f"{where}:{tag}", digest, before != digest)


def split_catalog_reference(reference: str) -> tuple[str, str, str]:
    """``[oras://]HOST/REPOSITORY[:TAG|@DIGEST]`` -> (host, repository, tag or digest);
    the tag defaults to ``latest``.  ValueError when there is no host or repository."""
    text = reference.removeprefix("oras://").strip()
    host, _, rest = text.partition("/")
    if not rest or not host:
        raise ValueError(f"'{reference}' is not a catalogue reference; give "
                         "REGISTRY/NAMESPACE/catalog[:TAG], e.g. 127.0.0.1:5000/sjtuhpc/catalog")
    if "@" in rest:
        repository, _, ref = rest.partition("@")
    elif ":" in rest.rsplit("/", 1)[-1]:
        repository, _, ref = rest.rpartition(":")
    else:
        repository, ref = rest, LATEST
    return host, repository, ref


def pull_catalog(registry: Registry, reference: str) -> bytes:
    """catalog.json's bytes from ``reference`` (see ``split_catalog_reference``; its host
    must be ``registry``'s), checked against the digests on the way.  KeyError when it does
    not exist, ValueError when it is not a catalogue artifact."""
    host, repository, ref = split_catalog_reference(reference)
    if host != registry.host:
        raise ValueError(f"'{reference}' is not in the registry {registry.host}")
    return pull_file(registry, repository, ref, CATALOG_TYPE)
