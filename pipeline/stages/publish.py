"""Publish stage: what passed its tests goes to the target, one tag at a time.

A tag (``repository:tag``) declares arches (the plan's cells for it).  It is published only
when every one of them either passed all its stages in this run or is already published
with the same build_id; otherwise nothing of it is pushed and the reason names the arch.
Order, so that a failure leaves the moving tags untouched and a rerun resumes:

1. each arch's image, copied by digest from the lab's staging area (blobs the target
   already has are skipped, same-registry blobs are mounted);
2. each arch's SIF as an ORAS artifact, ``<repository>-sif:<tag>-<arch>-<build_id[:12]>``
   (immutable: an existing one is kept, never overwritten);
3. each arch's SIF to the Sylabs library, when one is configured;
4. the OCI index (one multi-arch list) under the immutable tag ``<tag>-<publication>``
   (``publication``: a hash of the arches' build_ids; never overwritten);
5. the moving tags last: ``<repository>-sif:<tag>-<arch>``, then ``<repository>:<tag>``.

A tag built from a ``recipe.def`` has SIFs only (``publish_sif_tag``): steps 2, 3 and the
moving SIF tags; no image and no index is pushed, none is pretended.

Each arch's index descriptor and SIF manifest also carry its ``Record``: what the published
catalogue (``python -m pipeline catalog``) reads back and the image's labels do not say,
the job's test results and the matrix image's name, kind, description and commands; a SIF
manifest also the cell's variables, base and source.

Nothing pushed under an immutable tag depends on when the run happens: ``created`` is
``ctx.created``, the source revision's commit time (``git.commit_time``), so a rerun of the
same build writes the same manifests.  Without one (a dirty tree, an unknown revision:
``git.EPOCH``) a SIF takes its image's own ``org.opencontainers.image.created`` label, which
a rerun finds unchanged because it reuses the staged image of the same build_id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pipeline.names import BUILD_ID, FACTORY, OCI
from pipeline.planning.already_published import published_arches, published_sif_arches
from pipeline.tools import sylabs_library as library
from pipeline.tools.apptainer import Apptainer
from pipeline.tools.credentials import Secrets
from pipeline.tools.digests import sha256_file
from pipeline.tools.git import EPOCH
from pipeline.tools.oci_artifacts import (
    cell_annotations,
    copy_image,
    image_created,
    make_index,
    platform_of,
    push_sif,
    record_annotations,
)
from pipeline.tools.processes import Log
from pipeline.tools.registry.client import Registry, RegistryError
from pipeline.tools.registry.staging import Staging

SIF_SUFFIX = "-sif"


class PublishRefused(RuntimeError):
    """The tag may not be published (an arch is missing or failed); nothing was pushed."""


class PublishFailed(RuntimeError):
    """Pushing failed; the moving tag was not touched."""


@dataclass(frozen=True)
class PublishContext:
    target_name: str
    staging: Registry
    registry: Registry
    secrets: Secrets
    library_endpoint: str | None
    library_collection: str | None
    apptainer: Apptainer | None
    scratch: Path
    revision: str
    created: str  # the revision's commit time (git.commit_time), EPOCH when it has none
    # The run's staging: with it, every staged image is checked (attestation, labels)
    # before anything of the tag is pushed.
    trust: Staging | None = None


@dataclass(frozen=True)
class Record:
    """What the catalogue reads back of one arch and its image's labels do not say."""

    name: str  # matrix.yaml's image name
    kind: str
    description: str = ""
    commands: tuple = ()
    tests: tuple = ()  # ({"name", "result", "reason"}, ...) of the arch's job, masked
    # For the SIF manifest only: a SIF built from a recipe.def has no image labels to read.
    variables: dict = field(default_factory=dict)
    base_name: str = ""
    base_digest: str = ""
    source: str = ""

    def descriptor_annotations(self) -> dict:
        return record_annotations(self.name, self.kind, self.description, self.commands,
                                  self.tests)

    def sif_annotations(self) -> dict:
        return {**self.descriptor_annotations(),
                **cell_annotations(self.variables, self.base_name, self.base_digest,
                                   self.source)}


@dataclass
class ArchState:
    """One declared arch of a tag, as this run left it."""

    arch: str
    job_id: str
    build_id: str | None  # effective, when known
    digest: str | None = None  # the built image, when it passed in this run
    staging_repository: str | None = None
    sif: Path | None = None
    missing: str | None = None  # why it cannot be published
    pushed: dict = field(default_factory=dict)
    # Built from a recipe.def: a SIF and no Docker image (``digest``: the staged SIF artifact)
    sif_only: bool = False
    record: Record | None = None  # annotated on its descriptor and SIF manifest


def publication_id(build_ids: dict) -> str:
    text = "\n".join(f"{arch}={bid}" for arch, bid in sorted(build_ids.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def publish_tag(repository: str, tag: str, arches: list[ArchState], ctx: PublishContext,
                log: Log) -> dict:
    """Publish one tag; returns what was pushed.  PublishRefused / PublishFailed otherwise."""
    missing = [f"{a.arch} {a.missing}" for a in arches if a.missing]
    if missing:
        raise PublishRefused(f"{repository}:{tag} not published: " + "; ".join(missing))
    try:
        if arches and all(a.sif_only for a in arches):
            return publish_sif_tag(repository, tag, arches, ctx, log)
        return _publish(repository, tag, arches, ctx, log)
    except (RegistryError, FileNotFoundError, OSError) as err:
        raise PublishFailed(ctx.secrets.mask(str(err))) from None


def _publish(repository: str, tag: str, arches: list[ArchState], ctx: PublishContext,
             log: Log) -> dict:
    reg = ctx.registry
    current = published_arches(reg, repository, tag)
    fresh = [a for a in arches if current.get(a.arch, {}).get("annotations", {}).get(BUILD_ID)
             != a.build_id]
    for state in arches:
        if state not in fresh:
            state.pushed = {"result": "already published", "image":
                            f"{reg.host}/{repository}@{current[state.arch]['digest']}"}
        elif state.digest is None:
            raise PublishRefused(f"{repository}:{tag} not published: {state.arch} is published "
                                 "with another build_id and was not built in this run")
    publication = publication_id({a.arch: a.build_id for a in arches})
    immutable = f"{tag}-{publication}"
    if not fresh:
        log(f"{repository}:{tag}: every arch is already published")
        return {"index": f"{reg.host}/{repository}:{tag}@{next(iter(current.values()))['index']}",
                "tags": [tag], "result": "already published"}

    _check_staged(fresh, ctx, repository, tag)
    entries = {a: current[a] for a in current if a in {s.arch for s in arches}}
    sif_manifests = {}
    for state in fresh:
        if state.sif_only:
            raise PublishFailed(f"{repository}:{tag}: {state.arch} is a SIF built from a "
                                "recipe.def, the other arches are images; build all alike")
        log(f"{repository}:{tag}: copying {state.arch} image {state.digest}")
        descriptor = copy_image(ctx.staging, state.staging_repository, reg, repository,
                                state.digest, ctx.scratch)
        entries[state.arch] = {**descriptor,
                               "platform": platform_of(reg, repository, state.digest),
                               "annotations": descriptor_annotations(state)}
        state.pushed = {"result": "published", "image": f"{reg.host}/{repository}@{state.digest}"}
        if state.sif:
            sif_manifests[state.arch] = _push_sif(repository, tag, state, ctx, log)
    existing = reg.manifest(repository, immutable)
    if existing:  # the same build_ids were published before: reuse, never overwrite
        body, media_type, index_digest = existing
        log(f"{repository}:{immutable} exists ({index_digest}); reused")
    else:
        body = make_index([{k: v for k, v in e.items() if k != "index"}
                           for e in entries.values()], {
            f"{OCI}.created": ctx.created, f"{OCI}.revision": ctx.revision,
            f"{OCI}.version": tag, f"{FACTORY}.publication": publication})
        media_type = "application/vnd.oci.image.index.v1+json"
        index_digest = reg.put_manifest(repository, immutable, body, media_type)
    for state in fresh:
        if state.arch in sif_manifests:
            sif_repo = repository + SIF_SUFFIX
            sif_body, sif_type, _ = reg.manifest(sif_repo, sif_manifests[state.arch])
            reg.put_manifest(sif_repo, f"{tag}-{state.arch}", sif_body, sif_type)
    reg.put_manifest(repository, tag, body, media_type)
    log(f"{repository}:{tag}: published {index_digest} (also {immutable})")
    return {"index": f"{reg.host}/{repository}:{tag}@{index_digest}",
            "tags": [immutable, tag], "result": "published"}


def _push_sif(repository: str, tag: str, state: ArchState, ctx: PublishContext,
              log: Log) -> str:
    """Step 2 and 3 for one arch: its SIF under the immutable SIF tag, then the library;
    returns the SIF manifest's digest (the moving SIF tag is set last)."""
    reg = ctx.registry
    sif_repo = repository + SIF_SUFFIX
    sif_tag = f"{tag}-{state.arch}-{state.build_id[:12]}"
    log(f"{repository}:{tag}: pushing {state.sif.name} as oras://{reg.host}/{sif_repo}:"
        f"{sif_tag}")
    # A SIF-only tag has no image, and so no image label to fall back on.
    label = (partial(image_created, reg, repository, state.digest) if not state.sif_only
             else lambda: None)
    pushed = push_sif(reg, sif_repo, sif_tag, state.sif,
                      sif_annotations(state, ctx.revision, sif_created(ctx, label)))
    if pushed.kept:
        log(f"{repository}:{tag}: {sif_repo}:{sif_tag} exists ({pushed.manifest}, SIF "
            f"{pushed.sif}); kept, never overwritten")
    state.pushed.update({"sif": f"oras://{reg.host}/{sif_repo}:{tag}-{state.arch}",
                         "sif_immutable": f"oras://{reg.host}/{sif_repo}:{sif_tag}",
                         "sif_manifest": pushed.manifest,
                         "sif_sha256": pushed.sif})
    state.pushed["library"] = _library(repository, tag, state, ctx, log)
    return pushed.manifest


def publish_sif_tag(repository: str, tag: str, arches: list[ArchState], ctx: PublishContext,
                    log: Log) -> dict:
    """Publish a tag built from a ``recipe.def``: SIFs only, no image and no image index.

    Each arch's SIF goes where a Dockerfile image's SIF goes (immutable
    ``<repository>-sif:<tag>-<arch>-<build_id[:12]>``, the library, then the moving
    ``<tag>-<arch>``), each checked first against the SIF its build staged (attested, same
    bytes).  What is published is read back from the moving SIF tags' build_ids."""
    reg = ctx.registry
    sif_repo = repository + SIF_SUFFIX
    current = published_sif_arches(reg, repository, tag, [a.arch for a in arches])
    fresh = [a for a in arches
             if current.get(a.arch, {}).get("annotations", {}).get(BUILD_ID) != a.build_id]
    for state in arches:
        if state not in fresh:
            state.pushed = {"result": "already published", "sif":
                            f"oras://{reg.host}/{sif_repo}:{tag}-{state.arch}",
                            "sif_manifest": current[state.arch]["digest"]}
        elif state.digest is None or state.sif is None:
            raise PublishRefused(f"{repository}:{tag} not published: {state.arch} is published "
                                 "with another build_id and was not built in this run")
    tags = [f"{sif_repo}:{tag}-{a.arch}" for a in arches]
    if not fresh:
        log(f"{repository}:{tag}: every arch's SIF is already published")
        return {"tags": tags, "result": "already published"}
    _check_staged_sifs(fresh, ctx, repository, tag)
    manifests = {}
    for state in fresh:
        state.pushed = {"result": "published"}
        manifests[state.arch] = _push_sif(repository, tag, state, ctx, log)
    for state in fresh:  # the moving tags last
        body, media_type, _ = reg.manifest(sif_repo, manifests[state.arch])
        reg.put_manifest(sif_repo, f"{tag}-{state.arch}", body, media_type)
        log(f"{repository}:{tag}: oras://{reg.host}/{sif_repo}:{tag}-{state.arch} is "
            f"{manifests[state.arch]}")
    return {"tags": tags, "result": "published", "sif_only": True}


def _check_staged_sifs(fresh: list[ArchState], ctx: PublishContext, repository: str,
                       tag: str) -> None:
    """PublishFailed, before anything is pushed, unless each SIF to publish is the one its
    build staged (the attested artifact ``state.digest``), byte for byte."""
    trust = _staging_trust(ctx, repository, tag)
    for state in fresh if trust else ():
        staged_tag = trust.tag(state.build_id, state.arch)
        distrust = trust.distrust_artifact(ctx.staging, state.staging_repository, staged_tag,
                                           state.digest, state.build_id, state.job_id)
        found = ctx.staging.manifest(state.staging_repository, state.digest)
        layers = json.loads(found[0]).get("layers") or [{}] if found else [{}]
        if distrust is None and layers[0].get("digest") != sha256_file(state.sif):
            distrust = "the SIF to publish is not the one staged"
        if distrust:
            raise PublishFailed(f"{repository}:{tag} not published: the staged {state.arch} "
                                f"SIF {state.digest} is not trusted: {distrust}")


def _staging_trust(ctx: PublishContext, repository: str, tag: str):
    """The staging trust to check against (None: nothing to check); PublishFailed for pr
    staging, which is never published."""
    if ctx.trust is not None and not ctx.trust.trusted:
        raise PublishFailed(f"{repository}:{tag}: pr staging is never published")
    return ctx.trust


def sif_created(ctx: PublishContext, image_label: Callable[[], str | None]) -> str:
    """The SIF's ``created``: the commit time; without one the image's label (asked only
    then), else EPOCH."""
    if ctx.created and ctx.created != EPOCH:
        return ctx.created
    return image_label() or EPOCH


def descriptor_annotations(state: ArchState) -> dict:
    """An arch's descriptor in the index: its build_id and job, and its record."""
    record = state.record.descriptor_annotations() if state.record else {}
    return {**record, BUILD_ID: state.build_id, f"{FACTORY}.id": state.job_id}


def sif_annotations(state: ArchState, revision: str, created: str) -> dict:
    """The SIF manifest's annotations: facts of the build and its record, no wall-clock
    time."""
    record = state.record.sif_annotations() if state.record else {}
    return {**record, BUILD_ID: state.build_id, f"{FACTORY}.id": state.job_id,
            f"{OCI}.created": created, f"{OCI}.revision": revision}


def _check_staged(fresh: list[ArchState], ctx: PublishContext, repository: str,
                  tag: str) -> None:
    """PublishFailed, before anything is pushed, when a staged image is not what a trusted
    run of this plan made (see ``pipeline.tools.registry.staging``)."""
    trust = _staging_trust(ctx, repository, tag)
    for state in fresh if trust else ():
        distrust = trust.distrust(ctx.staging, state.staging_repository,
                                  trust.tag(state.build_id, state.arch), state.digest,
                                  state.build_id, state.job_id)
        if distrust:
            raise PublishFailed(f"{repository}:{tag} not published: the staged {state.arch} "
                                f"image {state.digest} is not trusted: {distrust}")


def _library(repository: str, tag: str, state: ArchState, ctx: PublishContext, log: Log) -> dict:
    """Push to the Sylabs library, or say why not."""
    endpoint = ctx.secrets.library_url or ctx.library_endpoint
    if not endpoint or not ctx.library_collection:
        return {"result": "skipped", "reason": f"target {ctx.target_name} has no library "
                "(set library: in matrix.yaml, or PIPELINE_LIBRARY_URL)"}
    if not ctx.secrets.library_token:
        return {"result": "skipped", "reason": "PIPELINE_LIBRARY_TOKEN is not set"}
    if ctx.apptainer is None:
        return {"result": "skipped", "reason": "no Apptainer runtime"}
    container = repository.rsplit("/", 1)[-1]
    reference = f"{ctx.library_collection}/{container}:{tag}"
    key = ctx.secrets.signing_key
    signing = (library.Signing(key, ctx.secrets.signing_passphrase) if key is not None
               else None)
    log(f"pushing {state.sif.name} to library://{reference} at {endpoint}")
    try:
        pushed = library.push(ctx.apptainer, state.sif, reference, endpoint,
                              ctx.secrets.library_token, log, signing=signing)
    except library.LibraryPushFailed as err:
        raise PublishFailed(ctx.secrets.mask(str(err))) from None
    return {"result": "published", "reference": f"library://{reference}", "endpoint": endpoint,
            "digest": pushed, "signed": ctx.secrets.signing_key is not None}
