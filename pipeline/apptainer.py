"""The Apptainer runtime: the host's ``apptainer``/``singularity``, else the lab's container.

Apptainer is not packaged for Debian 12, so the lab makes an image from Debian unstable's
``apptainer`` package (mmdebstrap, as for OS bases) and runs it as a container, the way
HPC centres run Singularity from a container image to build SIFs:

* conversion runs as root in that container with the Docker socket mounted, so that
  ``Bootstrap: docker-daemon`` reads the image the build stage left in the daemon;
* ``apptainer test`` and ``exec`` run as an unprivileged user (uid 1000) in a container
  that may create user namespaces and use ``/dev/fuse`` (squashfuse mounts the SIF), since
  root Apptainer asks for capabilities this VM does not grant.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.dockerhost import BuildClient
from pipeline.scratch import MOUNT, Scratch
from pipeline.shell import Log, run_logged

SUITE = "sid"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "apptainer,squashfs-tools,squashfuse,fuse3,e2fsprogs,ca-certificates"
USER = "1000"
# SYS_ADMIN only lets root in the container mount binfmt_misc (so Apptainer sees QEMU and runs
# a foreign-arch SIF); the uid change in setpriv drops every capability before Apptainer runs.
UNPRIVILEGED = ("--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
                "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
                "--device", "/dev/fuse")
PREPARE = ("mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true; "
           "chmod 666 /dev/fuse && ")


class ApptainerMissing(RuntimeError):
    """No runtime: neither on the host nor made by ``lab up``."""


@dataclass(frozen=True)
class Apptainer:
    kind: str  # "host" or "container"
    command: str  # apptainer or singularity (inside the container: apptainer)
    image: str | None  # the lab image, for kind "container"
    docker: str | None  # the docker CLI that runs it
    version: str

    def describe(self) -> str:
        where = f"container {self.image}" if self.kind == "container" else "host"
        return f"{self.version} ({where})"

    def argv(self, args: list, binds: list, *, docker_socket: bool = False,
             unprivileged: bool = False, scratch: Scratch | None = None) -> list:
        """The command line that runs ``apptainer ARGS`` with ``binds`` visible at their paths.

        ``scratch`` is where Apptainer writes its temporary files (APPTAINER_TMPDIR)."""
        if args and args[0] in ("exec", "test", "run", "shell"):
            # Inside the SIF too, the folders are where they are on the host.
            bind_args = [x for b in dict.fromkeys(map(str, binds)) for x in ("--bind", b)]
            args = [args[0], *bind_args, *args[1:]]
        if self.kind == "host":
            tmpdir = ["env", f"APPTAINER_TMPDIR={scratch.path}"] if scratch else []
            return [*tmpdir, self.command, *args]
        argv = [self.docker, "run", "--rm", "--network", "host"]
        for path in dict.fromkeys(str(b) for b in binds):
            argv += ["-v", f"{path}:{path}"]
        if docker_socket:
            socket = docker_socket_path()
            argv += ["-v", f"{socket}:/var/run/docker.sock"]
        if scratch is not None and scratch.in_memory:
            # exec: Apptainer refuses a temporary root filesystem on a noexec mount.
            argv += ["--tmpfs", f"{MOUNT}:exec,size={scratch.memory_bytes}",
                     "-e", f"APPTAINER_TMPDIR={MOUNT}"]
        elif scratch is not None:
            argv += ["-v", f"{scratch.path}:{scratch.path}", "-e", f"APPTAINER_TMPDIR={scratch.path}"]
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
        done = subprocess.run(self.argv(args, binds, **options), capture_output=True, text=True,
                              check=False)
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, args, done.stdout, done.stderr)
        return done.stdout


def docker_socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host[len("unix://"):] if host.startswith("unix://") else "/var/run/docker.sock"


def _marker(lab_dir: Path) -> Path:
    return lab_dir / "apptainer-image"


def find(lab_dir: Path, client: BuildClient | None) -> Apptainer:
    """The host's runtime when there is one, else the lab's image; ApptainerMissing if neither."""
    for command in ("apptainer", "singularity"):
        if shutil.which(command):
            version = subprocess.run([command, "--version"], capture_output=True, text=True,
                                     check=False).stdout.strip()
            return Apptainer("host", command, None, None, version)
    marker = _marker(lab_dir)
    if client is not None and marker.exists():
        image, _, version = marker.read_text().strip().partition(" ")
        if subprocess.run([client.path, "image", "inspect", image], capture_output=True,
                          check=False).returncode == 0:
            return Apptainer("container", "apptainer", image, client.path, version)
    raise ApptainerMissing("no Apptainer runtime: none on the host, and the lab has not made "
                           "its container image; run `python -m pipeline lab up`")


def make_image(lab_dir: Path, client: BuildClient, log: Log) -> Apptainer:
    """Make the lab's Apptainer image (cached), record it, and return the runtime."""
    recipe = hashlib.sha256(f"{SUITE}|{MIRROR}|{PACKAGES}".encode()).hexdigest()[:12]
    cache = lab_dir / "cache" / "rootfs"
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"apptainer-{SUITE}-{recipe}.tar"
    if not tarball.exists():
        partial = tarball.with_suffix(".partial.tar")
        # sid's Release file is often past its Valid-Until; the signature is still checked.
        run_logged(["mmdebstrap", "--variant=minbase", f"--include={PACKAGES}",
                    "--aptopt=Acquire::Check-Valid-Until \"false\"", SUITE, str(partial), MIRROR],
                   log)
        partial.replace(tarball)
    image = f"factory/apptainer:{recipe}"
    with tempfile.TemporaryDirectory(dir=cache) as context:
        os.link(tarball, Path(context) / "rootfs.tar")
        (Path(context) / "Dockerfile").write_text(
            "FROM scratch\nADD rootfs.tar /\n"
            # The unprivileged user that runs `apptainer test` and `exec`.
            f'RUN echo "factory:x:{USER}:{USER}::/home/factory:/bin/sh" >> /etc/passwd \\\n'
            f' && echo "factory:x:{USER}:" >> /etc/group \\\n'
            f" && mkdir -p /home/factory && chown {USER}:{USER} /home/factory\n")
        run_logged([*client.build_argv(), "--network", "host", "-t", image, context], log,
                   env=client.env())
    version = subprocess.run([client.path, "run", "--rm", image, "apptainer", "--version"],
                             capture_output=True, text=True, check=True).stdout.strip()
    _marker(lab_dir).write_text(f"{image} {version}\n")
    return Apptainer("container", "apptainer", image, client.path, version)
