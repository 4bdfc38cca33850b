"""Is a job already published?  Asked of the target registry before anything is built.

A published tag is an OCI index whose per-arch descriptors carry the job's effective
build_id as the annotation ``org.sjtuhpc.factory.build-id``.  The plan computes the same
effective build_ids as the build stage (``upstream.py`` gives the OS content without
building), so one manifest request per tag tells which jobs need nothing.

A tag built from a ``recipe.def`` has no index: its SIFs' moving tags
``<repository>-sif:<tag>-<arch>`` carry the build_id in their manifests' annotations.

Example::

    ids, unknown = effective_build_ids(tag_closure(declared, jobs), Upstream(settings))
    jobs = mark_published(jobs, target_registry, ids, unknown)
    # jobs whose build_id is published: action "skip", reason "already published as ..."
"""

from __future__ import annotations

import json
from dataclasses import replace

from pipeline.names import BUILD_ID
from pipeline.planning.build_ids import effective_build_id, upstream_identities
from pipeline.planning.jobs import Job
from pipeline.tools.oci_artifacts import read_index
from pipeline.tools.registry.client import Registry, RegistryError
from pipeline.tools.upstream import Upstream, UpstreamUnknown


def effective_build_ids(jobs: list[Job], upstream: Upstream) -> tuple[dict, dict]:
    """({job id: effective build_id}, {job id: why unknown}) for jobs in dependency order."""
    known: dict[str, str] = {}
    unknown: dict[str, str] = {}
    for job in jobs:
        missing = [n for n in job.needs if n not in known]
        if missing:
            unknown[job.id] = unknown.get(missing[0], f"{missing[0]} is not known")
            continue
        try:
            below = ([known[n] for n in job.needs] if job.needs
                     else [upstream.identity(job.variables)])
            known[job.id] = effective_build_id(job, below, upstream_identities(job, upstream))
        except UpstreamUnknown as err:
            unknown[job.id] = str(err)
    return known, unknown


def tag_closure(declared: list[Job], selected: list[Job]) -> list[Job]:
    """The declared jobs publishing needs build_ids for: every arch of the selected jobs'
    tags, and what those need, in the plan's (dependency) order."""
    by_id = {job.id: job for job in declared}
    tags = {(job.repository, job.tag) for job in selected}
    wanted = {job.id for job in declared if (job.repository, job.tag) in tags}
    todo = list(wanted)
    while todo:
        for need in by_id[todo.pop()].needs:
            if need in by_id and need not in wanted:
                wanted.add(need)
                todo.append(need)
    return [job for job in declared if job.id in wanted]


def published_arches(registry: Registry, repository: str, tag: str) -> dict:
    """{arch: descriptor} of the index published as ``repository:tag`` (empty when none)."""
    index = read_index(registry, repository, tag)
    if not index:
        return {}
    return {d["platform"]["architecture"]: {**d, "index": index["digest"]}
            for d in index["manifests"] if "platform" in d}


def sif_repository(repository: str) -> str:
    """Where the SIFs of ``repository``'s tags are published (ORAS artifacts)."""
    return repository + "-sif"


def published_sif_arches(registry: Registry, repository: str, tag: str, arches: list) -> dict:
    """{arch: {"digest", "annotations"}} of the SIFs published under the moving tags
    ``<repository>-sif:<tag>-<arch>``: a tag built from a ``recipe.def`` has no image index,
    its SIF manifests carry the build_id."""
    found = {}
    for arch in arches:
        manifest = registry.manifest(sif_repository(repository), f"{tag}-{arch}")
        if manifest is None:
            continue
        try:
            annotations = json.loads(manifest[0]).get("annotations") or {}
        except ValueError:
            annotations = {}
        found[arch] = {"digest": manifest[2], "annotations": annotations}
    return found


def sif_only(job: Job) -> bool:
    """A job built from a ``recipe.def``: it publishes a SIF and no image."""
    return job.recipe_file == "recipe.def"


def mark_published(jobs: list[Job], registry: Registry, ids: dict, unknown: dict) -> list[Job]:
    """Jobs whose effective build_id (``ids``, from ``effective_build_ids``) is published
    become ``skip``; those in ``unknown`` say why nobody can tell."""
    tags: dict = {}
    marked = []
    for job in jobs:
        result = job
        if job.action != "build" or job.id not in ids:
            if job.id in unknown and job.action == "build":
                result = replace(job, reason=f"{job.reason}; cannot tell whether it is "
                                             f"published: {unknown[job.id]}")
            marked.append(result)
            continue
        key = (job.repository, job.tag)
        if key not in tags:
            try:
                tags[key] = (published_sif_arches(registry, *key, _arches(jobs, key))
                             if sif_only(job) else published_arches(registry, *key))
            except RegistryError as err:
                tags[key] = err
        found = tags[key]
        if isinstance(found, RegistryError):
            result = replace(job, reason=f"{job.reason}; cannot tell whether it is published: "
                                         f"{found}")
        elif found.get(job.arch, {}).get("annotations", {}).get(BUILD_ID) == ids[job.id]:
            digest = found[job.arch]["digest"]
            where = (f"{sif_repository(job.repository)}:{job.tag}-{job.arch}" if sif_only(job)
                     else f"{job.repository}:{job.tag}")
            result = replace(job, action="skip", reason=f"already published as {registry.host}/"
                             f"{where} ({job.arch} {digest[:19]})")
        marked.append(result)
    return marked


def _arches(jobs: list[Job], key: tuple) -> list:
    return sorted({j.arch for j in jobs if (j.repository, j.tag) == key})
