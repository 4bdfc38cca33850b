"""OS base images: what ``base`` recipes build FROM, pinned by digest.

* A ``bootstrap`` OS is made here: ``mmdebstrap`` writes a root filesystem tarball (cached
  under the lab folder, remade when the suite's ``InRelease`` changes upstream), a ``FROM
  scratch`` / ``ADD rootfs.tar /`` build with ``--platform`` gives it the right
  architecture (``docker import`` would record the host's), and it is pushed to the lab
  registry.
* An ``image`` OS is copied, registry to registry, from upstream (through
  ``PIPELINE_MIRRORS``: air-gapped sites map ``docker.io`` to their mirror) into the lab
  registry: the arch's own manifest, picked from the upstream index, byte for byte, so every
  build uses one pinned, local digest, the arch's upstream digest.  The local engine is not
  involved (see ``OsBases._pull`` for why).

Either way the result carries ``content_id``: what changes when upstream changes (see
``upstream.py``: the suite's ``InRelease`` hash, or the upstream manifest digest).  It is
folded into the build_id of every job built on that OS.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.names import BUILD_ID, FACTORY
from pipeline.settings import Settings
from pipeline.tools import rootfs
from pipeline.tools.digests import cached_sha256_file, sha256_bytes
from pipeline.tools.docker_engine import BuildClient, push
from pipeline.tools.oci_artifacts import INDEX_TYPES, copy_image, platform_of
from pipeline.tools.registry.client import Registry, RegistryError
from pipeline.tools.registry.references import mirrored, registry_of, split_reference
from pipeline.tools.registry.retries import LAB_RETRIES, RetryPolicy
from pipeline.tools.registry.staging import Staging
from pipeline.tools.upstream import Upstream, UpstreamUnknown

OS_REPOSITORY = "factory/os"


ASK_RETRIES = RetryPolicy(attempts=3, total_seconds=20)


class BaseNotFound(RuntimeError):
    """The OS base image cannot be made or pulled; the message says why and what to do."""


@dataclass(frozen=True)
class OsBase:
    os: str
    arch: str
    name: str  # human reference for the base.name label
    reference: str  # what FROM uses: REGISTRY/factory/os@sha256:...
    digest: str  # sha256:... of that image
    content_id: str  # changes when upstream changes; goes into build_ids


@dataclass
class OsBases:
    """Makes each (os, arch) base once per run, even when several jobs ask at the same time."""

    settings: Settings
    client: BuildClient
    upstream: Upstream
    # Where the bases go: the run's staging (its registry, OS repository and login); None:
    # the lab registry's ``factory/os``, without a login.
    staging: Staging | None = None
    _done: dict = field(default_factory=dict)
    _locks: dict = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def registry(self) -> str:
        return self.staging.registry if self.staging else self.settings.registry

    @property
    def repository(self) -> str:
        return self.staging.os_repository if self.staging else OS_REPOSITORY

    def _client(self, log=None) -> Registry:
        if self.staging:
            return self.staging.client(log=log)
        return Registry(self.settings.registry, policy=LAB_RETRIES, log=log)

    def get(self, variables: dict, log) -> OsBase:
        key = (variables["os"], variables["arch"])
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._done:
                if variables.get("os_source") == "bootstrap":
                    self._done[key] = self._bootstrap(variables, log)
                else:
                    self._done[key] = self._pull(variables, log)
            return self._done[key]

    # -- bootstrap ------------------------------------------------------------------------
    def _bootstrap(self, v: dict, log) -> OsBase:
        arch = v["arch"]
        try:
            identity = self.upstream.identity(v)
        except UpstreamUnknown as err:
            raise BaseNotFound(str(err)) from None
        tarball = self._rootfs(v, identity, log)
        content = cached_sha256_file(tarball).removeprefix("sha256:")
        tag = f"{v['os']}-{arch}-{content[:16]}"
        reg, repository, lab = self.registry, self.repository, self._client(log)
        name = f"{reg}/{repository}:{tag}"
        # An OS base is staged and attested like a job's image: its id names the OS and
        # arch, its build_id is the root filesystem's sha256.
        base_id, content_id = f"os/{v['os']}@{arch}", content
        digest = lab.digest(repository, tag)
        distrust = digest and self.staging and self.staging.distrust(
            lab, repository, tag, digest, content_id, base_id)
        if distrust:
            log(f"os base {v['os']}/{arch}: not reused: {name} ({digest}): {distrust}")
            digest = None
        if digest is None:
            log(f"os base {v['os']}/{arch}: building image from {tarball.name}")
            rootfs.build_image(self.client, tarball, name, log, platform=f"linux/{arch}",
                               labels={BUILD_ID: content_id, f"{FACTORY}.id": base_id})
            push(self.client.path, name, log, env=self.client.env())
            digest = lab.digest(repository, tag)
            if digest is None:
                raise BaseNotFound(f"pushed {name} but the registry does not list it")
            if self.staging:
                self.staging.attest(lab, repository, tag, digest, content_id, base_id)
        return OsBase(v["os"], arch, name, f"{reg}/{repository}@{digest}", digest, identity)

    def _rootfs(self, v: dict, identity: str, log) -> Path:
        os_key, arch, suite, mirror = v["os"], v["arch"], v["os_suite"], v["os_mirror"]
        recipe = hashlib.sha256(f"minbase|{suite}|{mirror}|{arch}|{identity}".encode()
                                ).hexdigest()[:12]
        cache = self.settings.lab_dir / "cache" / "rootfs"
        cache.mkdir(parents=True, exist_ok=True)
        tarball = cache / f"{os_key}-{arch}-{recipe}.tar"
        if tarball.exists():
            return tarball
        if not shutil.which("mmdebstrap"):
            raise BaseNotFound(f"os {os_key} is bootstrapped with mmdebstrap, which is not "
                               "installed; run `python -m pipeline lab up`")
        log(f"os base {os_key}/{arch}: mmdebstrap {suite} from {mirror}")
        try:
            return rootfs.bootstrap(tarball, suite, mirror, log, arch=arch)
        except subprocess.CalledProcessError:
            raise BaseNotFound(f"mmdebstrap could not bootstrap {suite} for {arch} from "
                               f"{mirror}; see the job log") from None

    # -- registry images ------------------------------------------------------------------
    def _pull(self, v: dict, log) -> OsBase:
        """Copy the arch's image of an ``image`` OS into the lab registry, by digest.

        Registry to registry (``oci_artifacts.copy_image``), not ``docker pull --platform``
        then ``docker tag``: the engine keeps one image per name, so the amd64 and arm64 jobs
        of one OS, run at the same time, pulled into the same local ``source`` tag and each
        could tag and push the other's arch.  Here each arch's manifest is picked from the
        upstream index by its platform and copied under its own digest and tag, with nothing
        shared in between; the bytes are checked against their digests on the way, and the
        lab gets the upstream digest itself.  The builds pull it FROM the lab registry.
        """
        upstream, arch, os_key = v["os_image"], v["arch"], v["os"]
        source = mirrored(upstream, self.settings.mirrors)
        hint = ("" if source != upstream else "; if this site has a mirror, set "
                f"PIPELINE_MIRRORS={registry_of(upstream)}=<mirror host>")
        host, name, reference = _remote(source)
        remote = Registry(host, log=log)
        log(f"os base {os_key}/{arch}: copying {source} for linux/{arch} into the lab registry")
        try:
            # Few retries for the first question: an unreachable upstream is common (an
            # air-gapped site without PIPELINE_MIRRORS) and must not stall the run.
            found = Registry(host, log=log, policy=ASK_RETRIES).manifest(name, reference)
        except RegistryError as err:
            raise BaseNotFound(f"base {source} cannot be pulled for {arch}: {err}{hint}"
                               ) from None
        if found is None:
            raise BaseNotFound(f"base {source} does not exist in {host}{hint}")
        body, media_type, content = found  # content: what upstream.identity also reads
        digest = platform_digest(body, media_type, arch)
        if digest is None:
            raise BaseNotFound(f"base {source} has no linux/{arch} image; its index lists "
                               f"{', '.join(platforms(body)) or 'no platform'}")
        if media_type not in INDEX_TYPES:  # a single image: is it the arch's?
            found_arch = platform_of(remote, name, digest).get("architecture")
            if found_arch != arch:
                raise BaseNotFound(f"base {source} is an image for {found_arch} only, not "
                                   f"{arch}; use a multi-arch reference")
        reg, repository, lab = self.registry, self.repository, self._client(log)
        tag = f"{os_key}-{arch}-{digest.split(':')[1][:16]}"
        if lab.digest(repository, tag) != digest:
            scratch = self.settings.lab_dir / "scratch"
            scratch.mkdir(parents=True, exist_ok=True)
            try:
                copy_image(remote, name, lab, repository, digest, scratch)
            except (RegistryError, FileNotFoundError) as err:
                raise BaseNotFound(f"base {source} for {arch} cannot be copied into {reg}: "
                                   f"{err}{hint}") from None
            manifest = lab.manifest(repository, digest)
            if manifest is None:
                raise BaseNotFound(f"copied {source} for {arch} ({digest}) into {reg}, but the "
                                   "registry does not list it")
            lab.put_manifest(repository, tag, manifest[0], manifest[1])
        stored = lab.digest(repository, tag)
        if stored is None:
            raise BaseNotFound(f"copied {source} for {arch} into {reg}/{repository}:{tag}, "
                               "but the registry does not list it")
        if stored != digest:
            raise BaseNotFound(f"{reg}/{repository}:{tag} holds {stored}, not the "
                               f"{digest} copied from {source}")
        log(f"os base {os_key}/{arch}: {reg}/{repository}@{digest} (from {source}, {content})")
        return OsBase(os_key, arch, upstream, f"{reg}/{repository}@{digest}", digest, content)


def _remote(reference: str) -> tuple[str, str, str]:
    """(host, repository, tag or digest) of an image reference, ``@sha256:...`` included."""
    named, at, digest = reference.partition("@")
    host, name, tag = split_reference(named)
    return host, name, digest if at else tag


def _platforms(body: bytes) -> list[dict]:
    return [m for m in json.loads(body).get("manifests", []) if m.get("platform")]


def platforms(body: bytes) -> list[str]:
    """``os/arch[/variant]`` of each image an index lists."""
    return ["/".join(filter(None, (p["platform"].get("os"), p["platform"].get("architecture"),
                                   p["platform"].get("variant")))) for p in _platforms(body)]


def platform_digest(body: bytes, media_type: str, arch: str) -> str | None:
    """The digest of the ``linux/<arch>`` image: picked from an index, or a single manifest's
    own digest (its arch is checked from its config); None when the index lacks the arch."""
    if media_type not in INDEX_TYPES:
        return sha256_bytes(body)
    for entry in _platforms(body):
        platform = entry["platform"]
        if platform.get("os") == "linux" and platform.get("architecture") == arch:
            return entry["digest"]
    return None
