"""The Apptainer runtime: the host's ``apptainer``/``singularity``, else the lab's container.

Apptainer is not packaged for Debian 12, so the lab makes an image from Debian unstable's
``apptainer`` package (mmdebstrap, as for OS bases) and runs it as a container, the way
HPC centres run Singularity from a container image to build SIFs:

* conversion runs as root in that container with the Docker socket mounted, so that
  ``Bootstrap: docker-daemon`` reads the image the build stage left in the daemon;
* ``apptainer test`` and ``exec`` run as an unprivileged user (uid 1000) in a container
  that may create user namespaces and use ``/dev/fuse`` (squashfuse mounts the SIF), since
  root Apptainer asks for capabilities this VM does not grant.

Every container started for a run carries the label ``org.sjtuhpc.factory.run=<run id>``
and a name ``factory-<run id>-<n>``, so that an interrupted run can remove them all
(:func:`remove_containers`); killing the ``docker run`` client does not stop its container.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.tools.docker_engine import BuildClient
from pipeline.tools.processes import Log, run_captured, run_logged

RUN_LABEL = "org.sjtuhpc.factory.run"  # its value: the run id
_numbers = itertools.count(1)

MOUNT = Path("/scratch")  # where a tmpfs scratch is, inside the runtime's container

USER = "1000"
# SYS_ADMIN only lets root in the container mount binfmt_misc (so Apptainer sees QEMU and runs
# a foreign-arch SIF); the uid change in setpriv drops every capability before Apptainer runs.
UNPRIVILEGED = ("--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
                "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
                "--device", "/dev/fuse")
PREPARE = ("mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true; "
           "chmod 666 /dev/fuse && ")


@dataclass(frozen=True)
class Scratch:
    """Where Apptainer writes its temporary files (APPTAINER_TMPDIR) while building."""

    path: Path  # on the host: used when not in memory
    memory_bytes: int  # > 0: a tmpfs of at most this size at MOUNT instead
    reason: str

    @property
    def in_memory(self) -> bool:
        return self.memory_bytes > 0


class ApptainerMissing(RuntimeError):
    """No runtime: neither on the host nor made by ``lab up``."""


@dataclass(frozen=True)
class Apptainer:
    kind: str  # "host" or "container"
    command: str  # apptainer or singularity (inside the container: apptainer)
    image: str | None  # the lab image, for kind "container"
    docker: str | None  # the docker CLI that runs it
    version: str
    run_id: str | None = None  # labels and names the containers started for a run

    def container_options(self) -> list:
        """``--label``/``--name`` for one ``docker run`` of this run (none without a run id)."""
        if not self.run_id:
            return []
        return ["--label", f"{RUN_LABEL}={self.run_id}",
                "--name", f"factory-{self.run_id}-{next(_numbers)}"]

    def describe(self) -> str:
        where = f"container {self.image}" if self.kind == "container" else "host"
        return f"{self.version} ({where})"

    def argv(self, args: list, binds: list, *, docker_socket: bool = False,
             unprivileged: bool = False, scratch: Scratch | None = None,
             read_only: tuple = ()) -> list:
        """The command line that runs ``apptainer ARGS`` with ``binds`` visible at their paths.

        ``read_only`` are more folders, bound read-only: what a recipe's test code may read
        but must not change (the SIFs of the run).  ``scratch`` is where Apptainer writes
        its temporary files (APPTAINER_TMPDIR)."""
        rw = list(dict.fromkeys(map(str, binds)))
        ro = [b for b in dict.fromkeys(map(str, read_only)) if b not in rw]
        if args and args[0] in ("exec", "test", "run", "shell"):
            # Inside the SIF too, the folders are where they are on the host.
            bind_args = [x for b in rw for x in ("--bind", b)]
            bind_args += [x for b in ro for x in ("--bind", f"{b}:{b}:ro")]
            args = [args[0], *bind_args, *args[1:]]
        if self.kind == "host":
            tmpdir = ["env", f"APPTAINER_TMPDIR={scratch.path}"] if scratch else []
            return [*tmpdir, self.command, *args]
        argv = [self.docker, "run", "--rm", *self.container_options(), "--network", "host"]
        for path in rw:
            argv += ["-v", f"{path}:{path}"]
        for path in ro:
            argv += ["-v", f"{path}:{path}:ro"]
        if docker_socket:
            socket = docker_socket_path()
            argv += ["-v", f"{socket}:/var/run/docker.sock"]
        if scratch is not None and scratch.in_memory:
            # exec: Apptainer refuses a temporary root filesystem on a noexec mount.
            argv += ["--tmpfs", f"{MOUNT}:exec,size={scratch.memory_bytes}",
                     "-e", f"APPTAINER_TMPDIR={MOUNT}"]
        elif scratch is not None:
            argv += ["-v", f"{scratch.path}:{scratch.path}",
                     "-e", f"APPTAINER_TMPDIR={scratch.path}"]
        if unprivileged:
            # /dev/fuse is 0600 on this kind of host; open it up inside this container only.
            argv += [*UNPRIVILEGED, "-e", "HOME=/home/factory", self.image, "sh", "-c",
                     PREPARE + f'exec setpriv --reuid={USER} --regid={USER} --clear-groups "$@"',
                     "apptainer", self.command, *args]
            return argv
        return [*argv, self.image, self.command, *args]

    def run(self, args: list, binds: list, log: Log, **options) -> None:
        run_logged(self.argv(args, binds, **options), log)

    def output(self, args: list, binds: list, **options) -> str:
        done = run_captured(self.argv(args, binds, **options))
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, args, done.stdout, done.stderr)
        return done.stdout


def run_containers(docker: str, run_id: str) -> list[str]:
    """The ids of the containers (running or not) labelled with ``run_id``."""
    done = subprocess.run([docker, "ps", "-aq", "--no-trunc", "--filter",
                           f"label={RUN_LABEL}={run_id}"], capture_output=True, text=True,
                          check=False, timeout=60)
    return done.stdout.split() if done.returncode == 0 else []


def remove_containers(docker: str, run_id: str) -> list[str]:
    """``docker rm -f`` every container of the run ``run_id``; returns their ids."""
    ids = run_containers(docker, run_id)
    if ids:
        subprocess.run([docker, "rm", "-f", *ids], capture_output=True, check=False, timeout=120)
    return ids


def docker_socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host[len("unix://"):] if host.startswith("unix://") else "/var/run/docker.sock"


def marker(lab_dir: Path) -> Path:
    """Where ``lab up`` records the image it made: ``<image> <apptainer version>``."""
    return lab_dir / "apptainer-image"


def find(lab_dir: Path, client: BuildClient | None) -> Apptainer:
    """The host's runtime when there is one, else the lab's image; ApptainerMissing if neither."""
    for command in ("apptainer", "singularity"):
        if shutil.which(command):
            version = subprocess.run([command, "--version"], capture_output=True, text=True,
                                     check=False).stdout.strip()
            return Apptainer("host", command, None, None, version)
    recorded = marker(lab_dir)
    if client is not None and recorded.exists():
        image, _, version = recorded.read_text().strip().partition(" ")
        if subprocess.run([client.path, "image", "inspect", image], capture_output=True,
                          check=False).returncode == 0:
            return Apptainer("container", "apptainer", image, client.path, version)
    raise ApptainerMissing("no Apptainer runtime: none on the host, and the lab has not made "
                           "its container image; run `python -m pipeline lab up`")
