"""buildx builders: the factory's own docker-container builder, and one a site names.

The engine's built-in BuildKit (buildx's ``docker`` driver) cannot export a cache, so jobs
build with a builder that can (``pipeline.tools.build_cache``):

* **the factory's own**, ``factory-builder``, on the local engine, made on first use::

      docker buildx create --name factory-builder --driver docker-container \\
          --driver-opt network=host --driver-opt image=<BuildKit image> \\
          --buildkitd-config <lab>/buildx/buildkitd.toml --bootstrap

  ``network=host`` puts BuildKit in the host's network namespace: it reaches the
  registries on 127.0.0.1, and a build's ``--network host`` is the host's network, as with
  the engine's builder.  ``buildkitd.toml`` marks the lab's registries as plain HTTP
  (``[registry."127.0.0.1:5000"] http = true insecure = true``; BuildKit already speaks
  plain HTTP to any loopback registry, so a run whose staging is on another loopback port
  needs no new builder) and bounds BuildKit's local cache.  The image is
  ``PIPELINE_BUILDKIT_IMAGE`` or the factory's own (``pipeline.tools.buildkit_image``).  Jobs
  and runs share it: it is made under a lock, and made again only when its image is not
  the one wanted.  Its local cache persists across runs on this host, like the engine's.
* **a site's**, ``PIPELINE_BUILDX_BUILDER=name``: any builder made beforehand with
  ``docker buildx create`` (``--driver remote tcp://buildkitd:1234``, or a docker-container
  builder with a native arm64 node appended: ``docker buildx create --append --name X
  --platform linux/arm64 ssh://arm-host``), used as it is; the factory never changes it.

Logins: buildx hands BuildKit the registry credentials of the client's ``DOCKER_CONFIG``
(the run's staging login) over each build's session, for the base image, the cache import
and export alike; nothing is stored in the builder.  A remote builder must itself reach the
staging registry (and, when that is plain HTTP, have it in its own buildkitd.toml).
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import threading
from pathlib import Path

from pipeline.settings import Settings
from pipeline.tools import buildkit_image
from pipeline.tools.build_cache import FACTORY_BUILDER, BuildCommand
from pipeline.tools.docker_engine import BuildClient, DockerUnavailable
from pipeline.tools.processes import Log, run_logged
from pipeline.tools.registry.references import is_local

GC_KEEP_MB = 10_000  # BuildKit's local cache in the factory's builder, at most (MB)
_ready: set = set()  # (buildx config, builder, image) made or checked by this process
_lock = threading.Lock()


def _buildx(client: BuildClient, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([client.path, "buildx", *args], capture_output=True, text=True,
                          check=False, timeout=timeout, env={**os.environ, **client.env()})


def builder_image(client: BuildClient, name: str) -> str | None:
    """The BuildKit image of builder ``name`` ("" for a driver without one), None when
    there is no such builder."""
    done = _buildx(client, "inspect", name)
    if done.returncode:
        return None
    found = re.search(r'image="([^"]+)"', done.stdout)
    return found.group(1) if found else ""


def buildkitd_config(registries: list[str]) -> str:
    """buildkitd.toml: the plain-HTTP registries (loopback ones, as the factory's own
    registry client treats them) and a bound on the local cache."""
    lines = ["# Written by the factory (pipeline/tools/buildx.py).", "[worker.oci]",
             "  gc = true", f"  gckeepstorage = {GC_KEEP_MB}", ""]
    for registry in dict.fromkeys(registries):
        if is_local(registry):
            lines += [f'[registry."{registry}"]', "  http = true", "  insecure = true", ""]
    return "\n".join(lines)


def create(client: BuildClient, name: str, image: str, config: Path, log: Log) -> None:
    """A docker-container builder ``name`` on the local engine, started; CalledProcessError
    when buildx fails (the log has its output)."""
    run_logged([client.path, "buildx", "create", "--name", name, "--driver", "docker-container",
                "--driver-opt", "network=host", "--driver-opt", f"image={image}",
                "--buildkitd-config", str(config), "--bootstrap"], log, env=client.env())


def remove(client: BuildClient, name: str) -> bool:
    """Remove builder ``name`` with its container and local cache; False when there was none."""
    return _buildx(client, "rm", name, timeout=300).returncode == 0


def disk_usage(client: BuildClient, name: str) -> str:
    """``docker buildx du`` of builder ``name``: what its BuildKit holds locally."""
    done = _buildx(client, "du", "--builder", name, timeout=120)
    if done.returncode:
        raise DockerUnavailable(f"docker buildx du --builder {name}: {done.stderr.strip()}")
    return done.stdout


def config_file(settings: Settings) -> Path:
    return settings.lab_dir / "buildx" / "buildkitd.toml"


def ensure_factory_builder(client: BuildClient, settings: Settings, log: Log) -> str:
    """The factory's builder, made (or made again for another image) when needed; its name.

    DockerUnavailable when it cannot be made."""
    image = settings.buildkit_image or buildkit_image.reference()
    ready = (client.buildx_config, FACTORY_BUILDER, image)
    with _lock:
        if ready in _ready:
            return FACTORY_BUILDER
        folder = settings.lab_dir / "buildx"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # other runs on this host share it
            _make_factory_builder(client, settings, image, log)
        _ready.add(ready)
    return FACTORY_BUILDER


def _make_factory_builder(client: BuildClient, settings: Settings, image: str, log: Log) -> None:
    if not settings.buildkit_image:
        try:
            buildkit_image.ensure(settings.lab_dir, client, log)
        except subprocess.CalledProcessError as err:
            raise DockerUnavailable(f"the BuildKit image of the factory's builder could not be "
                                    f"made ({err}); see the job's log") from None
    found = builder_image(client, FACTORY_BUILDER)
    if found == image:
        return
    if found is not None:
        log(f"buildx builder {FACTORY_BUILDER} runs {found or 'no image'}, not {image}: "
            "making it again")
        remove(client, FACTORY_BUILDER)
    config = config_file(settings)
    config.write_text(buildkitd_config([settings.registry, settings.pr_registry]))
    log(f"making the buildx builder {FACTORY_BUILDER} (docker-container, {image})")
    try:
        create(client, FACTORY_BUILDER, image, config, log)
    except subprocess.CalledProcessError:
        raise DockerUnavailable(f"buildx could not make the builder {FACTORY_BUILDER} (see "
                                "the job's log)") from None


def prepare(command: BuildCommand, client: BuildClient, settings: Settings, log: Log) -> None:
    """Make sure the builder ``command`` needs is there: the factory's is made on first use,
    a site's must exist (DockerUnavailable says how to make one)."""
    if command.builder is None:
        return
    if not settings.buildx_builder:
        ensure_factory_builder(client, settings, log)
        return
    with _lock:
        ready = (client.buildx_config, command.builder, None)
        if ready in _ready:
            return
        if builder_image(client, command.builder) is None:
            raise DockerUnavailable(
                f"there is no buildx builder '{command.builder}' (PIPELINE_BUILDX_BUILDER) in "
                f"{client.buildx_config or 'buildx config'}: make it with `docker buildx create "
                f"--name {command.builder} ...`, or unset PIPELINE_BUILDX_BUILDER for the "
                "factory's own")
        _ready.add(ready)
