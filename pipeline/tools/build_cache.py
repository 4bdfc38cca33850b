"""BuildKit's registry cache: what a build imports and exports, so a fresh runner is warm.

A CI runner starts with an empty BuildKit: every ``RUN`` step of every recipe would run
again although the image differs from the last one only by a label.  So each build (with
buildx) imports and exports BuildKit's cache as an OCI artifact in the run's staging:

    --cache-from type=registry,ref=<staging>/<namespace>/cache/<repository>:<key>
    --cache-to   type=registry,ref=<same>,mode=max,image-manifest=true,oci-mediatypes=true,
                 ignore-error=true

* **Key**: the recipe folder, the cell's tag and the arch (``cache_tag``), never the
  build_id: a changed recipe or a new base has a new build_id, and it is exactly then that
  the cache of the last build of the same cell should be found.  The cells of one recipe
  keep apart (their build arguments differ, so their ``RUN`` steps do too), so that they
  do not overwrite each other's cache.
* ``mode=max`` keeps the layers of every stage, not only the final image's.
  ``image-manifest=true,oci-mediatypes=true`` store it as an OCI image manifest, which any
  OCI registry takes (the lab's Distribution registry too).  ``ignore-error=true``: a cache
  that cannot be written costs the next runner time, never this build.
* A cache that is not there yet (the first build of a cell) is not an error: BuildKit says
  so under ``importing cache manifest from ...`` and builds.

**Trust boundary.**  The cache lives in the run's staging and nowhere else, with the
staging's own login: a ``pr`` build imports and exports only pr staging's cache, and a
``main``/``nightly`` build imports and exports only trusted staging's cache.  A pull
request's code therefore can never write into the cache that main builds read (it would
otherwise put layers of its choosing under ``RUN`` steps of main's recipes: cache
poisoning), and main never reads pr staging.  ``cache_flags`` checks every reference it
gives against the staging it was given.

Which builds can use it: a buildx builder that can export a cache, i.e. not the ``docker``
driver of the engine's built-in BuildKit ("Cache export is not supported for the docker
driver").  The factory's own builder is a docker-container one (``pipeline.tools.buildx``);
``PIPELINE_BUILDX_BUILDER`` names another (remote, native arm64).  A client without buildx
(kind ``buildkit``: ``DOCKER_BUILDKIT=1 docker build``) cannot export one at all: it builds
with no cache flags and the job's log says so.  ``PIPELINE_BUILD_CACHE=off`` turns it off.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from pipeline.settings import Settings
from pipeline.tools.docker_engine import BuildClient
from pipeline.tools.registry.staging import Staging

FACTORY_BUILDER = "factory-builder"  # the factory's own docker-container builder
MAX_TAG = 128  # characters of an OCI tag


class CacheOutsideStaging(RuntimeError):
    """A cache reference outside the run's own staging: the trust boundary would be crossed."""


@dataclass(frozen=True)
class BuildCommand:
    argv: list  # the build command, before the build's own flags
    builder: str | None  # the buildx builder it needs; None: the engine's built-in BuildKit
    cache_ref: str | None  # the registry cache it imports and exports; None: no cache
    note: str  # for the job's log: which builder, which cache, or why none


@dataclass(frozen=True)
class Cell:
    """What a cache is kept for: a job's repository, recipe, tag (its cell) and arch."""

    repository: str
    recipe: str
    tag: str
    arch: str

    @classmethod
    def of(cls, job) -> Cell:  # a planning Job (tools sit below planning: no import)
        return cls(job.repository, job.recipe, job.tag, job.arch)


def cache_tag(job: Cell) -> str:
    """``<recipe folder>-<tag>-<arch>``: one cache per cell and arch, whatever its build_id.

    >>> cache_tag(Cell("r", "images/base/debian", "ompi-4.1", "arm64"))
    'debian-ompi-4.1-arm64'
    """
    text = f"{PurePosixPath(job.recipe).name}-{job.tag}-{job.arch}"
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip(".-") or "cache"
    if len(text) > MAX_TAG:  # keep it unique: a hash of the whole of it at the end
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        text = f"{text[:MAX_TAG - 18 - len(job.arch)]}-{digest}-{job.arch}"
    return text


def cache_repository(staging: Staging, job: Cell) -> str:
    """The cache's repository in staging: ``<namespace>/cache/<repository>``."""
    return staging.repository(f"cache/{job.repository}")


def cache_ref(staging: Staging, job: Cell) -> str:
    return f"{staging.registry}/{cache_repository(staging, job)}:{cache_tag(job)}"


def cache_flags(staging: Staging, job: Cell) -> list[str]:
    """``--cache-from`` and ``--cache-to`` for ``job``, in ``staging`` only (see the module)."""
    ref = cache_ref(staging, job)
    inside = f"{staging.registry}/{staging.namespace}/cache/"
    if not ref.startswith(inside):  # by construction; a guard against a future change
        raise CacheOutsideStaging(f"cache {ref} is outside the run's staging {inside}")
    return ["--cache-from", f"type=registry,ref={ref}",
            "--cache-to", f"type=registry,ref={ref},mode=max,image-manifest=true,"
                          "oci-mediatypes=true,ignore-error=true"]


def build_command(client: BuildClient, settings: Settings, staging: Staging,
                  job: Cell) -> BuildCommand:
    """The build command of ``job``: which builder, which cache flags (no Docker asked)."""
    if client.kind != "buildx":
        return BuildCommand(client.build_argv(), None, None, (
            "build cache: none: this docker client has no buildx, and the engine's built-in "
            "BuildKit cannot export a registry cache (install the buildx plugin for one)"))
    if settings.build_cache == "off":
        return BuildCommand(client.build_argv(), None, None,
                            "build cache: off (PIPELINE_BUILD_CACHE=off): the engine's "
                            "built-in BuildKit, nothing imported or exported")
    builder = settings.buildx_builder or FACTORY_BUILDER
    ref = cache_ref(staging, job)
    which = ("PIPELINE_BUILDX_BUILDER" if settings.buildx_builder
             else "the factory's docker-container builder")
    argv = [client.path, "buildx", "build", "--builder", builder, "--load",
            # A plain image manifest in the engine, as the built-in builder makes: no
            # provenance attestation (an index) that the staging push would not keep.
            "--provenance=false", *cache_flags(staging, job)]
    return BuildCommand(argv, builder, ref, f"build cache: {ref} (builder {builder}, {which}; "
                                            f"{'trusted' if staging.trusted else 'pr'} staging)")
