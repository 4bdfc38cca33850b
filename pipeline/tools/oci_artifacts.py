"""Moving OCI content: image copies between repositories, SIFs as ORAS artifacts, indexes.

Each function does one publication step through ``distribution.Registry`` and returns the
digest it made or kept; the publish stage decides the order.

What is published also carries, as annotations, what ``python -m pipeline catalog`` reads
back and an image's labels do not say (``record_annotations``): each arch's test results,
the matrix image's name, kind, description and commands; a SIF manifest also the cell's
variables, base and source (a SIF built from a ``recipe.def`` has no image to read labels
from).  Their keys are here, shared by the writer (``stages/publish.py``) and the reader
(``pipeline.published``).  A small file (the catalogue itself) travels as an artifact of
one layer (``push_file``, ``pull_file``), which ``oras pull`` unpacks.

Example::

    descriptor = copy_image(staging, "factory-staging/x/y", target, "x/y", "sha256:...", tmp)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import NamedTuple

from pipeline.names import FACTORY, OCI
from pipeline.tools.digests import sha256_bytes, sha256_file
from pipeline.tools.registry.client import Registry, RegistryError

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# What `apptainer push oras://` writes and `apptainer pull oras://` looks for.
SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"  # the OCI empty descriptor's "{}"

# The published record (README "Publishing"): on each arch's index descriptor and SIF.
TESTS = f"{FACTORY}.tests"  # compact JSON: [{"name", "result", "reason"}, ...] of the job
IMAGE_NAME = f"{FACTORY}.image-name"  # matrix.yaml's image name, e.g. lammps
KIND = f"{FACTORY}.kind"  # base | gpu | app
COMMANDS = f"{FACTORY}.commands"  # compact JSON list, e.g. ["gmx", "gmx_mpi"]
DESCRIPTION = f"{OCI}.description"
VARIABLE = f"{FACTORY}.var."  # + the variable's name: the cell, as in the image's labels
BASE_NAME, BASE_DIGEST = f"{OCI}.base.name", f"{OCI}.base.digest"
SOURCE = f"{OCI}.source"
SIGNED = f"{FACTORY}.signed"  # "true" on a SIF manifest whose SIF carries a signature


def compact(value) -> str:
    """JSON in one line, keys sorted: the same value always gives the same annotation."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def record_annotations(name: str, kind: str, description: str, commands: tuple,
                       tests: tuple) -> dict:
    """The record on an arch's index descriptor (and SIF manifest)."""
    return {IMAGE_NAME: name, KIND: kind, DESCRIPTION: description,
            COMMANDS: compact(list(commands)),
            TESTS: compact([{"name": t.get("name", ""), "result": t.get("result", ""),
                             "reason": t.get("reason") or ""} for t in tests])}


def cell_annotations(variables: dict, base_name: str, base_digest: str, source: str) -> dict:
    """What a SIF manifest records beyond ``record_annotations``: the cell, base, source."""
    return {**{VARIABLE + key: str(value) for key, value in variables.items()},
            BASE_NAME: base_name, BASE_DIGEST: base_digest, SOURCE: source}


def json_annotation(annotations: dict, key: str, default):
    """A JSON annotation read back; ``default`` when it is absent or not JSON of its type."""
    try:
        value = json.loads(annotations[key])
    except (KeyError, TypeError, ValueError):
        return default
    return value if isinstance(value, type(default)) else default


def copy_blob(source: Registry, source_repo: str, target: Registry, target_repo: str,
              digest: str, scratch: Path) -> str:
    """Make ``digest`` present in the target: already there, mounted, or copied and checked."""
    if target.has_blob(target_repo, digest):
        return "present"
    if source.host == target.host and target.mount_blob(target_repo, digest, source_repo):
        return "mounted"
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        path = Path(tmp) / "blob"
        source.download_blob(source_repo, digest, path)
        target.upload_blob(target_repo, digest, path)
    return "copied"


def copy_image(source: Registry, source_repo: str, target: Registry, target_repo: str,
               digest: str, scratch: Path) -> dict:
    """Copy a manifest (or an index and what it lists) by digest; returns its descriptor.

    The manifest bytes are copied unchanged, so the digest in the target is the one built.
    """
    found = source.manifest(source_repo, digest)
    if found is None:
        raise FileNotFoundError(f"{source.host}/{source_repo}@{digest} is not in the registry")
    body, media_type, _ = found
    manifest = json.loads(body)
    if media_type in INDEX_TYPES:
        for child in manifest["manifests"]:
            copy_image(source, source_repo, target, target_repo, child["digest"], scratch)
    else:
        for blob in [manifest["config"], *manifest["layers"]]:
            copy_blob(source, source_repo, target, target_repo, blob["digest"], scratch)
    target.put_manifest(target_repo, digest, body, media_type)
    return {"mediaType": media_type, "digest": digest, "size": len(body)}


def image_config(registry: Registry, repository: str, digest: str) -> dict:
    """The config of the single-arch image ``repository@digest``; KeyError when absent."""
    found = registry.manifest(repository, digest)
    if found is None:
        raise KeyError(f"{repository}@{digest} is not in the registry")
    return json.loads(registry.blob_bytes(repository, json.loads(found[0])["config"]["digest"]))


def image_labels(registry: Registry, repository: str, digest: str) -> dict:
    """The labels in the image's config."""
    return (image_config(registry, repository, digest).get("config") or {}).get("Labels") or {}


def platform_of(registry: Registry, repository: str, digest: str) -> dict:
    """``{"architecture", "os"[, "variant"]}`` from the image's config."""
    config = image_config(registry, repository, digest)
    platform = {"architecture": config["architecture"], "os": config["os"]}
    if config.get("variant"):
        platform["variant"] = config["variant"]
    return platform


def image_created(registry: Registry, repository: str, digest: str) -> str | None:
    """The image's ``org.opencontainers.image.created`` label (None without one)."""
    return image_labels(registry, repository, digest).get(CREATED)


class SifPushed(NamedTuple):
    manifest: str  # the manifest's digest under the tag
    sif: str  # the SIF layer's digest
    kept: bool  # the tag already held a SIF manifest, which was kept as it was


def sif_manifest(config: str, layer: str, size: int, name: str, annotations: dict) -> bytes:
    """The ORAS manifest of one SIF: the same inputs give the same bytes (and digest)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": SIF_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": SIF_LAYER, "digest": layer, "size": size,
                    "annotations": {TITLE: name}}],
        "annotations": dict(sorted(annotations.items())),
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def push_sif(target: Registry, repository: str, tag: str, sif: Path,
             annotations: dict) -> SifPushed:
    """Push a SIF as an ORAS artifact under the immutable ``tag``.

    ``apptainer pull oras://REGISTRY/REPOSITORY:TAG`` then fetches it.  A tag that already
    holds a SIF manifest is kept as it is, never overwritten (its digests are returned);
    one that holds anything else is an error.  The SIF blob is uploaded once and only when
    the registry lacks it (a rerun after a failure resumes).  The manifest is made of the
    inputs only, so the same SIF and annotations give the same digest.
    """
    existing = target.manifest(repository, tag)
    if existing is not None:
        body, media_type, digest = existing
        layers = json.loads(body).get("layers") or [{}]
        if media_type != OCI_MANIFEST or layers[0].get("mediaType") != SIF_LAYER:
            raise RegistryError(f"{target.host}/{repository}:{tag} holds a {media_type}, not "
                                "a SIF; it is not overwritten")
        return SifPushed(digest, layers[0]["digest"], kept=True)
    return put_sif(target, repository, tag, sif, annotations)


def put_sif(target: Registry, repository: str, tag: str, sif: Path,
            annotations: dict) -> SifPushed:
    """Push a SIF as an ORAS artifact under ``tag``, replacing what the tag held."""
    layer = sha256_file(sif)
    if not target.has_blob(repository, layer):
        target.upload_blob(repository, layer, sif)
    config = target.upload_bytes(repository, b"{}")
    body = sif_manifest(config, layer, sif.stat().st_size, sif.name, annotations)
    return SifPushed(target.put_manifest(repository, tag, body, OCI_MANIFEST), layer, kept=False)


def make_index(entries: list[dict], annotations: dict) -> bytes:
    """An OCI index of per-arch descriptors (each with platform and annotations)."""
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": sorted(entries, key=lambda e: e["platform"]["architecture"]),
             "annotations": dict(sorted(annotations.items()))}
    return json.dumps(index, separators=(",", ":")).encode()


def read_index(registry: Registry, repository: str, tag: str) -> dict | None:
    """The index published under ``tag`` as a dict (with ``digest``), or None."""
    found = registry.manifest(repository, tag)
    if found is None:
        return None
    body, media_type, digest = found
    if media_type not in INDEX_TYPES:
        return {"manifests": [], "digest": digest, "single": True}
    return {**json.loads(body), "digest": digest}


class FilePushed(NamedTuple):
    manifest: str  # the manifest's digest
    blob: str  # the file's digest


def file_manifest(body: bytes, media_type: str, title: str, annotations: dict) -> bytes:
    """An artifact of one file (OCI image spec 1.1: ``artifactType``, the empty config):
    ``oras pull`` writes the layer to a file named ``title``.  Made of its inputs only."""
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": media_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": sha256_bytes(b"{}"), "size": 2},
        "layers": [{"mediaType": media_type, "digest": sha256_bytes(body), "size": len(body),
                    "annotations": {TITLE: title}}],
        "annotations": dict(sorted(annotations.items())),
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def push_file(target: Registry, repository: str, tags: list[str], body: bytes,
              media_type: str, title: str, *, annotations: dict | None = None) -> FilePushed:
    """Push ``body`` as a one-file artifact under each of ``tags`` in order; an existing
    tag that holds another manifest is replaced (the caller keeps immutable tags apart)."""
    manifest = file_manifest(body, media_type, title, annotations or {})
    blob = target.upload_bytes(repository, body)
    target.upload_bytes(repository, b"{}")
    digest = sha256_bytes(manifest)
    for tag in tags:
        target.put_manifest(repository, tag, manifest, OCI_MANIFEST)
    return FilePushed(digest, blob)


def pull_file(registry: Registry, repository: str, reference: str, media_type: str) -> bytes:
    """The file of the one-file artifact ``repository:reference`` (a tag or a digest),
    checked against its digest; KeyError when there is none, ValueError when the
    manifest is not such an artifact."""
    found = registry.manifest(repository, reference)
    if found is None:
        raise KeyError(f"{registry.host}/{repository}:{reference} does not exist")
    try:
        layers = json.loads(found[0]).get("layers") or []
    except (ValueError, AttributeError):
        layers = []
    files = [layer for layer in layers
             if isinstance(layer, dict) and layer.get("mediaType") == media_type]
    if len(files) != 1:
        raise ValueError(f"{registry.host}/{repository}:{reference} is not an artifact of "
                         f"one {media_type} file")
    return registry.blob_bytes(repository, files[0]["digest"])
