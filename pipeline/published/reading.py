"""What the target registry holds, read into the catalogue's image records.

The registry is the truth: nothing here reads local files.  For one image repository ``R``:

* ``R``'s tags are listed (every page) and each manifest read.  A *moving* tag is an OCI
  index whose ``org.opencontainers.image.version`` annotation is the tag itself; the
  immutable ``<tag>-<publication>`` tags hold the same index under another name and are
  only referenced from it (``immutable``).  Anything else in ``R`` is not a published tag.
* Each arch of a moving tag: its descriptor (digest, platform, and the record the publish
  stage annotated: tests, image name, kind, description, commands) and its image config's
  labels (source, revision, created, base, build_id, the cell's ``var.*``).
* ``R-sif``'s tags are listed and read too.  A *moving* SIF tag is ``<tag>-<arch>`` holding
  a SIF artifact whose job annotation is ``R:<tag>@<arch>``; the immutable
  ``<tag>-<arch>-<build_id[:12]>`` ones are referenced from it.  An arch of an image tag
  with no moving SIF tag says so (``sif_missing``); moving SIF tags of a tag that has no
  image in ``R`` are a SIF-only tag (built from a ``recipe.def``): their record comes from
  the SIF manifests' annotations, as there is no image config to read.

Tags published before the factory recorded name, kind and tests still appear: their name
is the tag, their kind the one matrix.yaml gives the repository (``kinds``), no tests.

Manifests are read a few at a time (``WORKERS``); every request goes through the
``Registry`` client, with its retries.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pipeline.catalogue.model import default_commands
from pipeline.names import BUILD_ID, FACTORY, OCI
from pipeline.planning.already_published import sif_repository
from pipeline.tools.oci_artifacts import (
    BASE_DIGEST,
    BASE_NAME,
    COMMANDS,
    CREATED,
    DESCRIPTION,
    IMAGE_NAME,
    INDEX_TYPES,
    KIND,
    SIF_LAYER,
    SIGNED,
    SOURCE,
    TESTS,
    VARIABLE,
    image_labels,
    json_annotation,
)
from pipeline.tools.registry.client import Registry

WORKERS = 8
VERSION = f"{OCI}.version"
REVISION = f"{OCI}.revision"
PUBLICATION = f"{FACTORY}.publication"
JOB = f"{FACTORY}.id"


def read_repository(registry: Registry, repository: str, kinds: dict | None = None
                    ) -> list[dict]:
    """The published tags of ``repository`` as catalogue image records, sorted by tag.

    ``kinds``: repository -> kind, for tags published without a recorded kind."""
    sif_repo = sif_repository(repository)
    manifests = _read_all(registry, repository, registry.tags(repository))
    sif_manifests = _read_all(registry, sif_repo, registry.tags(sif_repo))
    return _Repository(registry, repository, manifests,
                       _moving_sifs(registry, repository, sif_manifests),
                       kinds or {}).records()


@dataclass(frozen=True)
class _Repository:
    """One repository's manifests and moving SIFs, made into records."""

    registry: Registry
    name: str
    manifests: dict  # tag -> (body, media type, digest)
    sifs: dict  # (tag, arch) -> {"annotations", "sif"}
    kinds: dict  # repository -> kind, for tags without a recorded one

    def records(self) -> list[dict]:
        records = []
        for tag in sorted(self.manifests):
            index = _moving_index(tag, self.manifests[tag])
            if index is not None:
                records.append(self.image_record(tag, index))
        images = {record["tag"] for record in records}
        records += [self.sif_only_record(tag)
                    for tag in sorted({tag for tag, _ in self.sifs} - images)]
        return sorted(records, key=lambda r: r["tag"])

    def image_record(self, tag: str, index: dict) -> dict:
        """A tag with an image index: each arch's descriptor, image labels and SIF."""
        host, repository = self.registry.host, self.name
        arches, labels_of, annotations_of = {}, {}, {}
        for descriptor in index.get("manifests") or []:
            platform = descriptor.get("platform") or {}
            arch = platform.get("architecture")
            if not arch or arch == "unknown":  # an attestation manifest (buildx), not an arch
                continue
            annotations = annotations_of[arch] = descriptor.get("annotations") or {}
            labels = labels_of[arch] = self.labels(descriptor["digest"])
            sif = self.sifs.get((tag, arch))
            arches[arch] = {
                "platform": "/".join(filter(None, (platform.get("os"), arch,
                                                   platform.get("variant")))),
                "manifest": descriptor["digest"],
                "build_id": annotations.get(BUILD_ID) or labels.get(BUILD_ID),
                "base_digest": labels.get(BASE_DIGEST) or None,
                "tests": _tests(annotations),
                "sif": sif["sif"] if sif else None,
                "sif_missing": None if sif else self.missing(tag, arch)}
        first = min(arches) if arches else None
        labels, top = labels_of.get(first, {}), index.get("annotations") or {}
        variables = _variables(labels)
        immutable = f"{tag}-{top.get(PUBLICATION, '')}"
        same = self.manifests.get(immutable, (None, None, None))[2] == index["digest"]
        return {
            "repository": repository, "tag": tag,
            **self.about(tag, annotations_of.get(first, {}), variables),
            "reference": f"{host}/{repository}:{tag}", "digest": index["digest"],
            "immutable": (f"{host}/{repository}:{immutable}" if same
                          else f"{host}/{repository}@{index['digest']}"),
            "base": labels.get(BASE_NAME) or None, "variables": variables,
            "source": {"url": labels.get(SOURCE) or None,
                       "revision": top.get(REVISION) or labels.get(REVISION) or None},
            "created": top.get(CREATED) or labels.get(CREATED) or None,
            "arches": arches,
        }

    def sif_only_record(self, tag: str) -> dict:
        """A tag with SIFs only (a recipe.def): everything from the SIF manifests."""
        arches, annotations_of = {}, {}
        for (sif_tag, arch), sif in sorted(self.sifs.items()):
            if sif_tag != tag:
                continue
            annotations = annotations_of[arch] = sif["annotations"]
            arches[arch] = {
                "platform": annotations.get(f"{VARIABLE}arch_platform") or f"linux/{arch}",
                "manifest": None, "build_id": annotations.get(BUILD_ID),
                "base_digest": annotations.get(BASE_DIGEST) or None,
                "tests": _tests(annotations), "sif": sif["sif"], "sif_missing": None}
        first = annotations_of[min(arches)]
        variables = _variables(first)
        return {
            "repository": self.name, "tag": tag, **self.about(tag, first, variables),
            "reference": None, "digest": None, "immutable": None,
            "base": first.get(BASE_NAME) or None, "variables": variables,
            "source": {"url": first.get(SOURCE) or None,
                       "revision": first.get(REVISION) or None},
            "created": first.get(CREATED) or None,
            "arches": arches,
        }

    def labels(self, digest: str) -> dict:
        """The labels of the arch's image; none when it is gone or not an image."""
        try:
            return image_labels(self.registry, self.name, digest)
        except (KeyError, ValueError):
            return {}

    def about(self, tag: str, annotations: dict, variables: dict) -> dict:
        """Name, kind, description, module and commands of a tag, from its record."""
        name = annotations.get(IMAGE_NAME) or tag
        kind = annotations.get(KIND) or self.kinds.get(self.name, "base")
        if kind == "app":
            module = f"{name}/{tag.removeprefix(name + '-')}"
        else:
            module = f"{self.name.rsplit('/', 1)[-1]}/{tag}"
        commands = (json_annotation(annotations, COMMANDS, []) if COMMANDS in annotations
                    else list(default_commands(kind, variables)))
        return {"name": name, "kind": kind, "description": annotations.get(DESCRIPTION, ""),
                "module": module, "commands": [str(c) for c in commands]}

    def missing(self, tag: str, arch: str) -> str:
        return (f"no SIF is published for {arch} (oras://{self.registry.host}/"
                f"{sif_repository(self.name)}:{tag}-{arch} does not exist)")


def _read_all(registry: Registry, repository: str, tags: list[str]) -> dict:
    """{tag: (body, media type, digest)} of the tags that still exist."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        found = list(pool.map(lambda tag: registry.manifest(repository, tag), tags))
    return {tag: got for tag, got in zip(tags, found, strict=True) if got is not None}


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _moving_index(tag: str, found: tuple) -> dict | None:
    """The index under ``tag`` when ``tag`` is a moving tag (its version annotation)."""
    body, media_type, digest = found
    index = _json(body)
    if media_type not in INDEX_TYPES or (index.get("annotations") or {}).get(VERSION) != tag:
        return None
    return {**index, "digest": digest}


def _moving_sifs(registry: Registry, repository: str, manifests: dict) -> dict:
    """{(tag, arch): {"annotations", "sif"}} of the moving SIF tags among ``manifests``
    (``R-sif``'s): SIF artifacts whose job is ``R:<tag>@<arch>``, under ``<tag>-<arch>``."""
    sif_repo = sif_repository(repository)
    where = f"oras://{registry.host}/{sif_repo}"
    found = {}
    for sif_tag, (body, _, digest) in manifests.items():
        manifest = _json(body)
        layers = [x for x in manifest.get("layers") or [] if isinstance(x, dict)]
        annotations = manifest.get("annotations") or {}
        job = str(annotations.get(JOB, ""))
        if not layers or layers[0].get("mediaType") != SIF_LAYER or \
                not job.startswith(repository + ":"):
            continue
        tag, _, arch = job[len(repository) + 1:].rpartition("@")
        if sif_tag != f"{tag}-{arch}":
            continue  # an immutable SIF tag: referenced from the moving one
        immutable = f"{sif_tag}-{str(annotations.get(BUILD_ID, ''))[:12]}"
        same = manifests.get(immutable, (None, None, None))[2] == digest
        found[(tag, arch)] = {
            "annotations": annotations,
            "sif": {"repository": sif_repo, "reference": f"{where}:{sif_tag}",
                    "immutable": f"{where}:{immutable}" if same else f"{where}@{digest}",
                    "manifest": digest, "blob": layers[0].get("digest"),
                    "size": layers[0].get("size"),
                    "signed": annotations.get(SIGNED) == "true"}}
    return found


def _tests(annotations: dict) -> list:
    return [{"name": str(t.get("name", "")), "result": str(t.get("result", "")),
             "reason": str(t.get("reason") or "")}
            for t in json_annotation(annotations, TESTS, []) if isinstance(t, dict)]


def _variables(facts: dict) -> dict:
    """The cell's variables from labels or SIF annotations, without the arch's own."""
    found = {key[len(VARIABLE):]: value for key, value in facts.items()
             if key.startswith(VARIABLE)}
    return {key: value for key, value in found.items()
            if key != "arch" and not key.startswith("arch_")}
