"""OS base images: what ``base`` recipes build FROM, pinned by digest.

* A ``bootstrap`` OS is made here: ``mmdebstrap`` writes a root filesystem tarball (cached
  under the lab folder, remade when the suite's ``InRelease`` changes upstream), a ``FROM scratch`` /
  ``ADD rootfs.tar /`` build with ``--platform`` gives it the right architecture (``docker
  import`` would record the host's), and it is pushed to the lab registry.
* An ``image`` OS is pulled for the arch through ``PIPELINE_MIRRORS`` (air-gapped sites map
  ``docker.io`` to their mirror) and copied into the lab registry, so every build uses one
  pinned, local digest.

Either way the result carries ``content_id``: what changes when upstream changes (see
``upstream.py``: the suite's ``InRelease`` hash, or the upstream manifest digest).  It is folded into the build_id
of every job built on that OS.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.settings import Settings
from pipeline.tools import rootfs
from pipeline.tools.digests import cached_sha256_file
from pipeline.tools.docker_engine import BuildClient, inspect_image, pull, push
from pipeline.tools.processes import run_logged
from pipeline.tools.registry.client import LAB_RETRIES, Registry
from pipeline.tools.registry.references import mirrored, registry_of
from pipeline.tools.upstream import Upstream, UpstreamUnknown

OS_REPOSITORY = "factory/os"


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
    _done: dict = field(default_factory=dict)
    _locks: dict = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

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
        arch, suite, mirror = v["arch"], v["os_suite"], v["os_mirror"]
        try:
            identity = self.upstream.identity(v)
        except UpstreamUnknown as err:
            raise BaseNotFound(str(err)) from None
        tarball = self._rootfs(v["os"], arch, suite, mirror, identity, log)
        content = cached_sha256_file(tarball).removeprefix("sha256:")
        tag = f"{v['os']}-{arch}-{content[:16]}"
        reg = self.settings.registry
        digest = Registry(reg, policy=LAB_RETRIES).digest(OS_REPOSITORY, tag)
        if digest is None:
            log(f"os base {v['os']}/{arch}: building image from {tarball.name}")
            ref = f"{reg}/{OS_REPOSITORY}:{tag}"
            rootfs.build_image(self.client, tarball, ref, log, platform=f"linux/{arch}")
            push(self.client.path, ref, log)
            digest = Registry(reg, policy=LAB_RETRIES).digest(OS_REPOSITORY, tag)
            if digest is None:
                raise BaseNotFound(f"pushed {reg}/{OS_REPOSITORY}:{tag} but the registry does "
                                   "not list it")
        name = f"{reg}/{OS_REPOSITORY}:{tag}"
        return OsBase(v["os"], arch, name, f"{reg}/{OS_REPOSITORY}@{digest}", digest, identity)

    def _rootfs(self, os_key: str, arch: str, suite: str, mirror: str, identity: str,
                log) -> Path:
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
        upstream, arch = v["os_image"], v["arch"]
        source = mirrored(upstream, self.settings.mirrors)
        log(f"os base {v['os']}/{arch}: pulling {source} for linux/{arch}")
        try:
            pull(self.client.path, source, arch, log)
        except subprocess.CalledProcessError:
            hint = ("" if source != upstream else
                    "; if this site has a mirror, set PIPELINE_MIRRORS="
                    f"{registry_of(upstream)}=<mirror host>")
            raise BaseNotFound(f"base {source} cannot be pulled for {arch}{hint}") from None
        upstream_digest = inspect_image(self.client.path, source,
                                   "{{range .RepoDigests}}{{.}} {{end}}").split()
        content = upstream_digest[0].split("@", 1)[1] if upstream_digest else inspect_image(
            self.client.path, source, "{{.Id}}")
        tag = f"{v['os']}-{arch}-{content.split(':')[1][:16]}"
        reg = self.settings.registry
        local = f"{reg}/{OS_REPOSITORY}:{tag}"
        run_logged([self.client.path, "tag", source, local], log)
        push(self.client.path, local, log)
        digest = Registry(reg, policy=LAB_RETRIES).digest(OS_REPOSITORY, tag)
        return OsBase(v["os"], arch, upstream, f"{reg}/{OS_REPOSITORY}@{digest}", digest, content)
