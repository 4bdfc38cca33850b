"""One image from a registry, by digest, into an OCI image layout on disk.

A definition-file recipe builds FROM the image its need staged.  Apptainer could pull it
itself (``docker://...@sha256:``), but that squashes the whole base into a SIF first, only
for the build to unpack it again; and the pull would need the staging login inside the
container that then runs the recipe.  So the factory fetches the manifest, config and
layers here, in Python, with the staging client (every blob and the manifest are checked
against their digests as they arrive), and Apptainer builds from the folder
(``Bootstrap: oci``) with no registry and no login at all.

Layout::

    <folder>/oci-layout
    <folder>/index.json        one manifest, ref.name = the digest's hex
    <folder>/blobs/sha256/<hex>
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.tools.oci_artifacts import INDEX_TYPES
from pipeline.tools.registry.client import Registry, RegistryError

LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'


def ref_name(digest: str) -> str:
    """A blob's file name, and the layout's tag for the image: the digest's hex.

    >>> ref_name("sha256:4bc6ff")
    '4bc6ff'
    """
    return digest.split(":", 1)[1]


def fetch_layout(registry: Registry, repository: str, digest: str, folder: Path) -> None:
    """Write ``repository@digest`` (one image manifest, not an index) as an OCI layout into
    ``folder``, the only image there: ``Bootstrap: oci`` / ``From: <folder>`` builds FROM it
    (Apptainer takes no ``:tag`` in a definition file's oci ``From:``; name the folder after
    the digest).  Blobs already there
    (an earlier fetch into the same folder) are not fetched again."""
    found = registry.manifest(repository, digest)
    if found is None:
        raise RegistryError(f"{registry.host}/{repository}@{digest} is not in the registry")
    body, media_type, got = found
    if media_type in INDEX_TYPES:
        raise RegistryError(f"{registry.host}/{repository}@{digest} is an index, not one "
                            "arch's image")
    manifest = json.loads(body)
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for descriptor in [manifest["config"], *manifest.get("layers", [])]:
        path = blobs / ref_name(descriptor["digest"])
        if not path.exists():
            partial = path.with_name(path.name + ".partial")
            registry.download_blob(repository, descriptor["digest"], partial)
            partial.replace(path)
    (blobs / ref_name(got)).write_bytes(body)
    (folder / "oci-layout").write_bytes(LAYOUT_VERSION)
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": media_type or manifest.get("mediaType"), "digest": got, "size": len(body),
        "annotations": {"org.opencontainers.image.ref.name": ref_name(got)}}]}
    (folder / "index.json").write_text(json.dumps(index, separators=(",", ":")))
