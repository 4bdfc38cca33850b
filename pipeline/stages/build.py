"""Build stage: one job's recipe, for its arch, FROM an image pinned by digest.

* ``base`` jobs build FROM their OS base image (``pipeline.osbase``); jobs with needs build
  FROM the image their need produced, by digest, never a moving tag.
* The job's effective build_id is its plan build_id with the digests below it folded in
  (the OS content, or the needs' effective build_ids): a new upstream OS or a rebuilt base
  changes it.
* Builds import and export BuildKit's registry cache in the run's staging, keyed by recipe,
  cell and arch, so that a fresh runner is not cold (``pipeline.tools.build_cache``).
* Every built image is pushed to the run's staging area (``pipeline.tools.registry.staging``:
  trusted for main/nightly, a separate one for pr), ``<staging>/<repository>:<build_id>-<arch>``;
  that is what gives it a digest to build FROM.  Staging is not publishing: nothing reaches
  a target's repositories here.  When staging already holds the build_id, and (trusted
  staging) its attestation shows a trusted run put it there, nothing is rebuilt.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from pipeline.planning.build_ids import effective_build_id, upstream_identities
from pipeline.planning.jobs import Job
from pipeline.stages.context import StageContext
from pipeline.stages.labels import build_args, image_labels
from pipeline.tools import buildx
from pipeline.tools.build_cache import Cell, build_command
from pipeline.tools.docker_engine import inspect_image, push
from pipeline.tools.processes import Log, run_logged
from pipeline.tools.registry.staging import Staging
from pipeline.tools.upstream import UpstreamUnknown


class BuildFailed(RuntimeError):
    """The recipe did not build; the message holds the last lines of the build output."""


class NeedNotStaged(RuntimeError):
    """A job taken from staging (``run --only``'s needs) is not there, or not trusted:
    its own CI job has not staged it (an infrastructure failure, exit 4, never a rebuild)."""


@dataclass(frozen=True)
class Built:
    tagged: str  # REGISTRY/factory-staging/<repository>:<build_id>-<arch>
    reference: str  # REGISTRY/factory-staging/<repository>@sha256:...
    digest: str
    build_id: str  # effective: plan build_id + what is below it
    base_name: str
    base_digest: str
    cached: bool

    def to_json(self) -> dict:
        return {"image": self.tagged, "reference": self.reference, "digest": self.digest,
                "build_id": self.build_id,
                "base": f"{self.base_name}@{self.base_digest}", "cached": self.cached}


def staging_ref(job: Job, build_id: str, staging: Staging) -> tuple[str, str]:
    """(repository, tag) of a job's image in its staging area."""
    return staging.repository(job.repository), staging.tag(build_id, job.arch)


def build_command_of(job: Job, ctx: StageContext, log: Log) -> list[str]:
    """The build command of ``job`` before its own flags: the builder (made on first use)
    and BuildKit's registry cache in the run's staging (``pipeline.tools.build_cache``)."""
    command = build_command(ctx.client, ctx.settings, ctx.staging, Cell.of(job))
    buildx.prepare(command, ctx.client, ctx.settings, log)
    log(command.note)
    return command.argv


def build(job: Job, needs: dict, ctx: StageContext, log: Log, *,
          reuse_only: bool = False) -> Built:
    """Build ``job`` (or find it already built); ``needs`` maps need ids to their Built.

    ``reuse_only``: take the job from staging or raise NeedNotStaged, never build it."""
    if job.needs:
        need = needs[job.needs[0]]
        base_name = job.needs[0].rsplit("@", 1)[0]
        base_ref, base_digest = need.reference, need.digest
        below = [needs[n].build_id for n in job.needs]
    else:
        os_base = ctx.os_bases.get(job.variables, log)
        base_name, base_ref, base_digest = os_base.name, os_base.reference, os_base.digest
        below = [os_base.content_id]
    try:  # the same function the plan uses: the two cannot disagree
        build_id = effective_build_id(job, below, upstream_identities(job, ctx.os_bases.upstream))
    except UpstreamUnknown as err:
        raise BuildFailed(f"cannot tell what the image's upstream is now: {err}") from None
    staging = ctx.staging
    registry = staging.client()
    repository, tag = staging_ref(job, build_id, staging)
    found = registry.digest(repository, tag)
    if found:
        distrust = staging.distrust(registry, repository, tag, found, build_id, job.id)
        if distrust is None:
            log(f"already built: {staging.reference(job.repository, tag)} ({found})")
            return Built(staging.reference(job.repository, tag),
                         staging.reference(job.repository, found), found, build_id, base_name,
                         base_digest, True)
        # Not ours: build it again; the push below replaces the tag.
        log(f"not reused: {staging.reference(job.repository, tag)} ({found}): {distrust}")
    if reuse_only:
        why = f"not usable ({distrust})" if found else "not there"
        raise NeedNotStaged(
            f"{job.id} is {why} in staging as {staging.reference(job.repository, tag)}; the "
            "CI job that builds it must pass first (re-run it, then this one)")

    ref = staging.reference(job.repository, tag)
    argv = [*build_command_of(job, ctx, log), "--network", "host", "--platform",
            f"linux/{job.arch}", "--progress", "plain", "--build-arg", f"BASE_IMAGE={base_ref}"]
    for key, value in build_args(job).items():
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in image_labels(job, build_id, base_name, base_digest, ctx.source).items():
        argv += ["--label", f"{key}={value}"]
    argv += ["-t", ref, str(ctx.catalogue_dir / job.recipe)]
    tail: list[str] = []

    def keep(line: str) -> None:
        log(line)
        tail.append(line)
        del tail[:-15]

    try:
        run_logged(argv, keep, env=ctx.client.env())
    except subprocess.CalledProcessError:
        raise BuildFailed("docker build failed:\n    " + "\n    ".join(tail)) from None
    arch = inspect_image(ctx.client.path, ref, "{{.Architecture}}")
    if arch != job.arch:
        raise BuildFailed(f"the image was built for {arch}, not {job.arch}")
    push(ctx.client.path, ref, log, env=ctx.client.env())
    digest = registry.digest(repository, tag)
    if not digest:
        raise BuildFailed(f"pushed {ref}, but the registry does not list it")
    staging.attest(registry, repository, tag, digest, build_id, job.id)
    return Built(ref, staging.reference(job.repository, digest), digest, build_id, base_name,
                 base_digest, False)
