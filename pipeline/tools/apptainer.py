"""The Apptainer runtime: the host's ``apptainer``/``singularity``, else the lab's container.

Apptainer is not packaged for Debian 12, so the lab makes an image from Debian unstable's
``apptainer`` package (mmdebstrap, as for OS bases) and runs it as a container, the way
HPC centres run Singularity from a container image to build SIFs:

* conversion runs as root in that container with the Docker socket mounted, so that
  ``Bootstrap: docker-daemon`` reads the image the build stage left in the daemon;
* ``apptainer test`` and ``exec`` run as an unprivileged user (uid 1000) in a container
  that may create user namespaces and use ``/dev/fuse`` (squashfuse mounts the SIF), since
  root Apptainer asks for capabilities this VM does not grant.

The lab also makes a "cluster node" image (``pipeline/lab/node_image.py``): this runtime plus
host MPIs, where the mpi-hybrid test runs a node's ``mpirun`` launching ``apptainer exec``
ranks.  ``lab up`` records it with what its MPIs said about themselves (:class:`Node`).

Every container started for a run carries the label ``org.sjtuhpc.factory.run=<run id>``
and a name ``factory-<run id>-<n>``, so that an interrupted run can remove them all
(:func:`remove_containers`); killing the ``docker run`` client does not stop its container.
"""

from __future__ import annotations

import itertools
import json
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


@dataclass(frozen=True)
class NodeMpi:
    """One MPI of the lab's node, as ``lab up`` found it (interpreted by the test stage)."""

    mpirun: str  # its path in the node, e.g. /usr/bin/mpirun.mpich
    version_output: str  # what ``mpirun --version`` printed
    libraries: tuple = ()  # the libmpi*.so.* file names of its installation


@dataclass(frozen=True)
class Node:
    """The lab's cluster node: an image with this runtime and host MPIs."""

    image: str
    mpis: tuple = ()  # NodeMpi, one per installed MPI

    def to_json(self) -> dict:
        return {"image": self.image, "mpis": [
            {"mpirun": m.mpirun, "version_output": m.version_output,
             "libraries": list(m.libraries)} for m in self.mpis]}

    @classmethod
    def from_json(cls, data: dict) -> Node:
        return cls(data["image"], tuple(
            NodeMpi(m["mpirun"], m["version_output"], tuple(m.get("libraries", ())))
            for m in data.get("mpis", ())))


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
    node: Node | None = None  # the lab's cluster node, for kind "container"

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
        rw, ro = _folders(binds, read_only)
        args = with_binds(args, binds, read_only)
        if self.kind == "host":
            tmpdir = ["env", f"APPTAINER_TMPDIR={scratch.path}"] if scratch else []
            return [*tmpdir, self.command, *args]
        argv = self._docker_run(rw, ro)
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
            return [*argv, *_unprivileged(self.image, [self.command, *args])]
        return [*argv, self.image, self.command, *args]

    def node_argv(self, command: list, binds: list, read_only: tuple = ()) -> list:
        """``command`` (e.g. an ``mpirun`` of ``apptainer exec`` ranks) as the unprivileged
        user on the cluster node: the host itself with a host Apptainer, else a container of
        the lab's node image, as ``apptainer exec`` runs in the runtime's."""
        if self.kind == "host":
            return list(map(str, command))
        if self.node is None:
            raise ApptainerMissing("the lab has no cluster node image; run "
                                   "`python -m pipeline lab up`")
        rw, ro = _folders(binds, read_only)
        return [*self._docker_run(rw, ro), *_unprivileged(self.node.image,
                                                          list(map(str, command)))]

    def _docker_run(self, rw: list, ro: list) -> list:
        argv = [self.docker, "run", "--rm", *self.container_options(), "--network", "host"]
        for path in rw:
            argv += ["-v", f"{path}:{path}"]
        for path in ro:
            argv += ["-v", f"{path}:{path}:ro"]
        return argv

    def run(self, args: list, binds: list, log: Log, **options) -> None:
        run_logged(self.argv(args, binds, **options), log)

    def output(self, args: list, binds: list, **options) -> str:
        done = run_captured(self.argv(args, binds, **options))
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, args, done.stdout, done.stderr)
        return done.stdout


def _folders(binds: list, read_only: tuple) -> tuple[list, list]:
    rw = list(dict.fromkeys(map(str, binds)))
    return rw, [b for b in dict.fromkeys(map(str, read_only)) if b not in rw]


def with_binds(args: list, binds: list, read_only: tuple = ()) -> list:
    """``apptainer ARGS`` with the folders bound at their own paths inside the SIF too (for
    exec, test, run and shell; other commands unchanged)."""
    if not args or args[0] not in ("exec", "test", "run", "shell"):
        return list(args)
    rw, ro = _folders(binds, read_only)
    bind_args = [x for b in rw for x in ("--bind", b)]
    bind_args += [x for b in ro for x in ("--bind", f"{b}:{b}:ro")]
    return [args[0], *bind_args, *args[1:]]


def _unprivileged(image: str, command: list) -> list:
    """The rest of a ``docker run``: ``command`` in ``image`` as uid 1000, able to create user
    namespaces and mount the SIF with FUSE."""
    # /dev/fuse is 0600 on this kind of host; open it up inside this container only.
    return [*UNPRIVILEGED, "-e", "HOME=/home/factory", image, "sh", "-c",
            PREPARE + f'exec setpriv --reuid={USER} --regid={USER} --clear-groups "$@"',
            "apptainer", *command]


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


def node_marker(lab_dir: Path) -> Path:
    """Where ``lab up`` records the cluster node image and its MPIs (JSON, :class:`Node`)."""
    return lab_dir / "node-image.json"


def find_node(lab_dir: Path, docker: str) -> Node | None:
    """The node ``lab up`` recorded, when its image is still there."""
    try:
        node = Node.from_json(json.loads(node_marker(lab_dir).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    present = subprocess.run([docker, "image", "inspect", node.image], capture_output=True,
                             check=False).returncode == 0
    return node if present else None


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
            return Apptainer("container", "apptainer", image, client.path, version,
                             node=find_node(lab_dir, client.path))
    raise ApptainerMissing("no Apptainer runtime: none on the host, and the lab has not made "
                           "its container image; run `python -m pipeline lab up`")
