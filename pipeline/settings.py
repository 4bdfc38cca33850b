"""Settings that come from the environment, read once into a frozen dataclass.

Each variable, its default, and what it means:

* ``PIPELINE_REGISTRY`` (``127.0.0.1:5000``): the local target: the lab's trusted registry
  host:port (also main/nightly staging)
* ``PIPELINE_PR_REGISTRY`` (``127.0.0.1:5001``): the lab's registry for pr-mode staging
* ``PIPELINE_LAB_DIR`` (``<checkout>/.lab``): lab state: pids, logs, caches
* ``PIPELINE_OUT_DIR`` (``<checkout>/out``): run output: summary.json, logs
* ``PIPELINE_BUILDER`` (``auto``): ``buildx``, ``buildkit`` (the daemon's BuildKit) or
  ``auto``
* ``PIPELINE_DOCKER`` (found): the docker client to build with
* ``PIPELINE_MIRRORS`` (none): ``docker.io=mirror.site:5000,quay.io=...``: registry mirrors
* ``PIPELINE_CONVERT_SCRATCH`` (``auto``): ``memory``, ``disk`` or ``auto``: where SIF
  conversion works (``pipeline.scratch``)
* ``PIPELINE_BUILD_CACHE`` (``registry``): ``registry`` or ``off``: whether builds import and
  export BuildKit's registry cache in the run's staging (``pipeline.tools.build_cache``);
  ``off`` builds with the engine's own BuildKit and no cache outside this host
* ``PIPELINE_BUILDX_BUILDER`` (none): the name of an existing buildx builder to build with,
  used as it is (``docker buildx create --name X --driver remote tcp://...``, or a
  docker-container builder with a native arm64 node appended); none: the factory's own
  docker-container builder ``factory-builder`` on the local engine, made on first use
* ``PIPELINE_BUILDKIT_IMAGE`` (made): the BuildKit image of the factory's own builder, e.g.
  ``moby/buildkit:buildx-stable-1`` where Docker Hub can be reached; none: an image the
  factory makes from Debian's packages (``pipeline.tools.buildkit_image``)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError, Problem

BUILDERS = ("auto", "buildx", "buildkit")
# Where SIF conversion works (``pipeline.stages.scratch``).
POLICIES = ("auto", "memory", "disk")
# Whether builds use BuildKit's registry cache (``pipeline.tools.build_cache``).
BUILD_CACHES = ("registry", "off")


@dataclass(frozen=True)
class Settings:
    checkout: Path
    registry: str
    lab_dir: Path
    out_dir: Path
    builder: str
    docker: str | None
    mirrors: dict
    convert_scratch: str = "auto"
    pr_registry: str = "127.0.0.1:5001"
    build_cache: str = "registry"
    buildx_builder: str | None = None  # None: the factory's own builder
    buildkit_image: str | None = None  # None: made by the factory

    @classmethod
    def from_env(cls, checkout: Path, env: dict | None = None) -> Settings:
        env = os.environ if env is None else env
        builder = _one_of(env, "PIPELINE_BUILDER", BUILDERS)
        return cls(
            checkout=checkout,
            registry=env.get("PIPELINE_REGISTRY", "127.0.0.1:5000"),
            lab_dir=Path(env.get("PIPELINE_LAB_DIR", checkout / ".lab")),
            out_dir=Path(env.get("PIPELINE_OUT_DIR", checkout / "out")),
            builder=builder,
            docker=env.get("PIPELINE_DOCKER") or None,
            mirrors=parse_mirrors(env.get("PIPELINE_MIRRORS", "")),
            convert_scratch=_one_of(env, "PIPELINE_CONVERT_SCRATCH", POLICIES),
            pr_registry=env.get("PIPELINE_PR_REGISTRY", "127.0.0.1:5001"),
            build_cache=_one_of(env, "PIPELINE_BUILD_CACHE", BUILD_CACHES),
            buildx_builder=env.get("PIPELINE_BUILDX_BUILDER") or None,
            buildkit_image=env.get("PIPELINE_BUILDKIT_IMAGE") or None,
        )


def _one_of(env, name: str, choices: tuple) -> str:
    value = env.get(name, choices[0])
    if value not in choices:
        raise InputError([Problem(name, None, f"'{value}' is not one of {', '.join(choices)}")])
    return value


def parse_mirrors(text: str) -> dict:
    """``"docker.io=m.site:5000, quay.io=q.site"`` -> ``{"docker.io": "m.site:5000", ...}``."""
    mirrors = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, sep, mirror = item.partition("=")
        if not sep or not source or not mirror:
            raise InputError([Problem("PIPELINE_MIRRORS", None, f"'{item}' is not REGISTRY=MIRROR, "
                                      "e.g. docker.io=mirror.example.org:5000")])
        mirrors[source.strip()] = mirror.strip()
    return mirrors
