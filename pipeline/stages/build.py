"""Build stage: one job's recipe, for its arch, FROM an image pinned by digest.

* ``base`` jobs build FROM their OS base image (``pipeline.osbase``); jobs with needs build
  FROM the image their need produced, by digest, never a moving tag.
* The job's effective build_id is its plan build_id with the digests below it folded in
  (the OS content, or the needs' effective build_ids): a new upstream OS or a rebuilt base
  changes it.
* Builds import and export BuildKit's registry cache in the run's staging, keyed by recipe,
  cell and arch, so that a fresh runner is not cold (``pipeline.tools.build_cache``).
* A recipe folder with a ``recipe.def`` instead of a Dockerfile is built straight into a
  SIF by Apptainer (``build_definition.py``), and staged as an ORAS artifact.
* Every built image is pushed to the run's staging area (``pipeline.tools.registry.staging``:
  trusted for main/nightly, a separate one for pr), ``<staging>/<repository>:<build_id>-<arch>``;
  that is what gives it a digest to build FROM.  Staging is not publishing: nothing reaches
  a target's repositories here.  When staging already holds the build_id, and (trusted
  staging) its attestation shows a trusted run put it there, nothing is rebuilt.
"""

from __future__ import annotations

import subprocess

from pipeline.planning.build_ids import effective_build_id, upstream_identities
from pipeline.planning.jobs import Job
from pipeline.stages import build_definition
from pipeline.stages.built import BuildFailed, Built, NeedNotStaged, staging_ref
from pipeline.stages.context import StageContext
from pipeline.stages.labels import build_args, image_labels
from pipeline.tools import buildx
from pipeline.tools.build_cache import Cell, build_command
from pipeline.tools.docker_engine import inspect_image, push
from pipeline.tools.processes import Log, run_logged
from pipeline.tools.upstream import UpstreamUnknown


def build_command_of(job: Job, ctx: StageContext, log: Log) -> list[str]:
    """The build command of ``job`` before its own flags: the builder (made on first use)
    and BuildKit's registry cache in the run's staging (``pipeline.tools.build_cache``)."""
    command = build_command(ctx.client, ctx.settings, ctx.staging, Cell.of(job))
    buildx.prepare(command, ctx.client, ctx.settings, log)
    log(command.note)
    return command.argv


def _base(job: Job, needs: dict, ctx: StageContext, log: Log) -> tuple:
    """(base name, base reference, base digest, the build_ids below) of a Dockerfile job."""
    if job.needs:
        need = needs[job.needs[0]]
        if need.sif_only:
            raise BuildFailed(f"{job.needs[0]} is built from a recipe.def into a SIF only; "
                              "a Dockerfile cannot build FROM it")
        base_name = job.needs[0].rsplit("@", 1)[0]
        base_ref, base_digest = need.reference, need.digest
        below = [needs[n].build_id for n in job.needs]
        return base_name, base_ref, base_digest, below
    os_base = ctx.os_bases.get(job.variables, log)
    return os_base.name, os_base.reference, os_base.digest, [os_base.content_id]


def build(job: Job, needs: dict, ctx: StageContext, log: Log, *,
          reuse_only: bool = False) -> Built:
    """Build ``job`` (or find it already built); ``needs`` maps need ids to their Built.

    ``reuse_only``: take the job from staging or raise NeedNotStaged, never build it.
    A ``recipe.def`` job is built into a SIF by ``build_definition``."""
    if build_definition.is_definition(job):
        return build_definition.build(job, needs, ctx, log, reuse_only=reuse_only)
    base_name, base_ref, base_digest, below = _base(job, needs, ctx, log)
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
