"""The Docker engine and the client that builds with BuildKit.

Builds go through the docker CLI, because docker-py's build API uses the classic builder
(no BuildKit, no ``--platform`` for a foreign arch).  Everything else (ping, inspect,
containers) goes through docker-py.

Which CLI builds, chosen automatically (``PIPELINE_BUILDER`` overrides):

* ``buildx``: a client with the buildx plugin (hosted CI runners) - ``docker buildx build``;
* ``buildkit``: a client older than 23 that drives the daemon's built-in BuildKit with
  ``DOCKER_BUILDKIT=1`` (Debian 12's docker.io); newer clients need buildx for that.

With buildx, a job's image is built by a buildx builder that can export BuildKit's
registry cache (``pipeline.tools.build_cache``, ``pipeline.tools.buildx``); the images the
factory makes for itself (OS bases, the lab's Apptainer and BuildKit images) keep the
engine's built-in BuildKit (``build_argv``).  buildx records its builders under
``BUILDX_CONFIG`` (by default beside the client's config, ``~/.docker/buildx``); a run's
docker commands use a config folder of their own for the staging login (``docker_login``),
so the client passes the user's ``BUILDX_CONFIG`` along explicitly: the builders are the
same whatever folder holds the login.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import docker
from docker.errors import DockerException
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from pipeline.settings import Settings
from pipeline.tools.processes import Log, run_logged

NEEDS_BUILDX = 23  # from this client version on, BuildKit builds need the buildx plugin
SHORT = 159  # characters of an error message shown


class DockerUnavailable(RuntimeError):
    """The daemon does not answer, or no client can build with BuildKit."""


@dataclass(frozen=True)
class BuildClient:
    kind: str  # "buildx" or "buildkit"
    path: str
    version: str
    # A DOCKER_CONFIG folder holding the staging login (``docker_login``), or None.
    config: str | None = None
    # Where buildx records its builders (BUILDX_CONFIG), whatever DOCKER_CONFIG is; None:
    # buildx's own default.
    buildx_config: str | None = None

    def build_argv(self) -> list[str]:
        """A build with the engine's built-in BuildKit, loaded into the engine."""
        return [self.path, "buildx", "build", "--load"] if self.kind == "buildx" else [
            self.path, "build"]

    def env(self) -> dict:
        """The environment every docker command of the run gets."""
        return {"DOCKER_BUILDKIT": "1", **({"DOCKER_CONFIG": self.config} if self.config else {}),
                **({"BUILDX_CONFIG": self.buildx_config} if self.buildx_config else {})}


def buildx_config_dir(environ=None) -> str:
    """The folder buildx keeps its builders in for this user: ``BUILDX_CONFIG``, else
    ``buildx`` in the client's config folder (``DOCKER_CONFIG`` or ``~/.docker``)."""
    environ = os.environ if environ is None else environ
    if environ.get("BUILDX_CONFIG"):
        return environ["BUILDX_CONFIG"]
    return str(Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "buildx")


def _client_version(path: str) -> str | None:
    done = subprocess.run([path, "version", "--format", "{{.Client.Version}}"],
                          capture_output=True, text=True, check=False, timeout=30)
    version = done.stdout.strip()
    return version or None


def _has_buildx(path: str) -> bool:
    done = subprocess.run([path, "buildx", "version"], capture_output=True, text=True,
                          check=False, timeout=30)
    return done.returncode == 0


def candidates(settings: Settings) -> list[str]:
    found = [settings.docker] if settings.docker else []
    found += [p for p in ("/usr/bin/docker", shutil.which("docker")) if p]
    return list(dict.fromkeys(p for p in found if p and shutil.which(p)))


def find_build_client(settings: Settings) -> BuildClient:
    """The client to build with, per PIPELINE_BUILDER; DockerUnavailable says what to install."""
    seen = []
    for path in candidates(settings):
        version = _client_version(path)
        if version is None:
            continue
        seen.append(f"{path} {version}")
        if settings.builder in ("auto", "buildx") and _has_buildx(path):
            return BuildClient("buildx", path, version, buildx_config=buildx_config_dir())
        if settings.builder in ("auto", "buildkit") and int(version.split(".")[0]) < NEEDS_BUILDX:
            return BuildClient("buildkit", path, version)
    wanted = {"auto": "buildx or a client older than 23", "buildx": "the buildx plugin",
              "buildkit": "a docker client older than 23"}[settings.builder]
    raise DockerUnavailable(
        f"no docker client can build with BuildKit (PIPELINE_BUILDER={settings.builder} wants "
        f"{wanted}; found: {', '.join(seen) or 'none'}); install Debian's docker.io or the "
        "buildx plugin, or run `python -m pipeline lab up`")


def engine() -> docker.DockerClient:
    """A docker-py client for the daemon; DockerUnavailable with a plain message if it is down."""
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except DockerException as err:
        raise DockerUnavailable(f"the Docker daemon is not reachable ({_short(err)}); start it "
                                "with `python -m pipeline lab up`") from None
    return client


def daemon_version() -> str | None:
    try:
        return engine().version().get("Version")
    except DockerUnavailable:
        return None


def _short(err: Exception) -> str:
    text = str(err)
    return text if len(text) <= SHORT else text[:SHORT - 3] + "..."


# -- CLI actions used by the stages (the build client's CLI, so one daemon view) -------------
def _retried(err: BaseException) -> bool:
    return isinstance(err, subprocess.CalledProcessError)


# Pushes and pulls cross a network: a 503, a 429 or a dropped connection deserves another
# try, as publishing gives them (pipeline.tools.registry.client).  The daemon already retries
# each layer a few times; these are retries of the whole push, bounded in attempts and time.
# The CLI does not show a 429's Retry-After, so the backoff grows to half a minute instead.
_network = retry(retry=retry_if_exception(_retried),
                 stop=stop_after_attempt(6) | stop_after_delay(300),
                 wait=wait_exponential(multiplier=2, max=30), reraise=True)


@_network
def push(docker_cli: str, ref: str, log: Log, env: dict | None = None) -> None:
    run_logged([docker_cli, "push", ref], log, env=env)


@_network
def pull(docker_cli: str, ref: str, arch: str, log: Log, env: dict | None = None) -> None:
    run_logged([docker_cli, "pull", "--platform", f"linux/{arch}", ref], log, env=env)


def inspect_image(docker_cli: str, ref: str, template: str) -> str:
    return subprocess.run([docker_cli, "image", "inspect", ref, "--format", template],
                          capture_output=True, text=True, check=True).stdout.strip()


def docker_login(client: BuildClient, registry: str, username: str, password: str,
                 folder: Path) -> BuildClient:
    """``client`` logged in to ``registry`` in a config folder of its own (0700).

    The password goes on the standard input, never on a command line; the folder holds only
    this login, so a run cannot push with credentials meant for another mode.
    """
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    done = subprocess.run([client.path, "--config", str(folder), "login", "--username",
                           username, "--password-stdin", registry], input=password,
                          capture_output=True, text=True, check=False, timeout=120)
    if done.returncode:
        why = (done.stderr or done.stdout).strip().replace(password, "***").splitlines()[-1:]
        raise DockerUnavailable(f"docker login to {registry} failed: {' '.join(why)}")
    return replace(client, config=str(folder))
