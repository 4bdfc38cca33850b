"""Hand-off through staging: what one CI job leaves for the runners and the publish job after it.

On a CI system each plan job runs on a runner of its own (``run --only``), and publishing
is a job of its own (``publish``).  Staging is what they share, so a job that passed its
tests leaves there, beside its image (staged by the build stage):

* its SIF, as an ORAS artifact ``<staging>/<repository>-sif:<build_id[:32]>-<arch>``, with
  an attestation like the image's (trusted staging only: pr runs never publish, so a pr
  job stages no SIF).  The SIF is staged only *after* the tests passed, so a staged,
  attested SIF is the record that this build_id passed its tests; ``publish`` asks for it
  and publishes nothing of a tag whose arch lacks one.

Everything is keyed by the effective build_id: a SIF staged by an earlier pipeline for the
same build_id is the same image, tested, and is used as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.names import BUILD_ID, FACTORY, OCI
from pipeline.planning.jobs import Job
from pipeline.tools.oci_artifacts import SIF_LAYER, put_sif
from pipeline.tools.processes import Log
from pipeline.tools.registry.client import RegistryError
from pipeline.tools.registry.staging import Staging

SIF_REPOSITORY_SUFFIX = "-sif"


@dataclass(frozen=True)
class StagedSif:
    reference: str  # oras://REGISTRY/NAMESPACE/REPOSITORY-sif@sha256:...
    manifest: str
    sif: str  # the SIF blob's digest

    def to_json(self) -> dict:
        return {"reference": self.reference, "manifest": self.manifest, "sif": self.sif}


def sif_location(job: Job, build_id: str, staging: Staging) -> tuple[str, str]:
    """(repository, tag) of the job's tested SIF in staging."""
    return (staging.repository(job.repository + SIF_REPOSITORY_SUFFIX),
            staging.tag(build_id, job.arch))


def stage_sif(job: Job, build_id: str, image_digest: str, sif: Path, staging: Staging,
              log: Log) -> StagedSif:
    """Stage the tested ``sif`` of ``job`` (a trusted run), or keep the one staged already
    for this build_id when its attestation vouches for it."""
    registry = staging.client()
    repository, tag = sif_location(job, build_id, staging)
    found = registry.manifest(repository, tag)
    if found is not None:
        problem = staging.distrust_artifact(registry, repository, tag, found[2], build_id,
                                            job.id)
        if problem is None:
            log(f"tested SIF already staged: {staging.registry}/{repository}:{tag} ({found[2]})")
            return _staged(staging, repository, found[0], found[2])
        log(f"replacing {staging.registry}/{repository}:{tag}: {problem}")
    pushed = put_sif(registry, repository, tag, sif, {
        BUILD_ID: build_id, f"{FACTORY}.id": job.id, f"{FACTORY}.image": image_digest,
        f"{OCI}.title": sif.name})
    staging.attest(registry, repository, tag, pushed.manifest, build_id, job.id)
    log(f"staged the tested SIF as oras://{staging.registry}/{repository}:{tag} "
        f"({pushed.manifest})")
    return StagedSif(f"oras://{staging.registry}/{repository}@{pushed.manifest}",
                     pushed.manifest, pushed.sif)


def fetch_sif(job: Job, build_id: str, staging: Staging, target: Path,
              log: Log) -> StagedSif | str:
    """Download the job's tested SIF from staging into ``target``; the reason, as a string,
    when there is none that a trusted run staged for this build_id."""
    registry = staging.client()
    repository, tag = sif_location(job, build_id, staging)
    try:
        found = registry.manifest(repository, tag)
        if found is None:
            return (f"no tested SIF in staging ({staging.registry}/{repository}:{tag}): its "
                    "CI job failed, was skipped or has not run")
        problem = staging.distrust_artifact(registry, repository, tag, found[2], build_id,
                                            job.id)
        if problem:
            return f"the SIF in staging is not used: {problem}"
        staged = _staged(staging, repository, found[0], found[2])
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        log(f"fetching the tested SIF {staged.reference} into {target}")
        registry.download_blob(repository, staged.sif, partial)
        partial.replace(target)
        return staged
    except (RegistryError, ValueError, KeyError) as err:
        return f"cannot read the tested SIF from staging: {err}"


def _staged(staging: Staging, repository: str, body: bytes, manifest: str) -> StagedSif:
    layers = json.loads(body).get("layers") or [{}]
    if layers[0].get("mediaType") != SIF_LAYER:
        raise ValueError(f"{staging.registry}/{repository}@{manifest} is not a SIF artifact")
    return StagedSif(f"oras://{staging.registry}/{repository}@{manifest}", manifest,
                     layers[0]["digest"])
