"""The lab's Apptainer: an image made from Debian unstable's package, run as a container.

Apptainer is not packaged for Debian 12, and sid's needs a newer glibc than the host's, so
the lab bootstraps a sid root filesystem with it (mmdebstrap) and runs that as a container:
the way HPC centres run Singularity from a container image to build SIFs.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from pipeline.tools import apptainer, rootfs
from pipeline.tools.apptainer import USER, Apptainer
from pipeline.tools.docker_engine import BuildClient
from pipeline.tools.processes import Log

SUITE = "sid"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "apptainer,squashfs-tools,squashfuse,fuse3,e2fsprogs,ca-certificates"


def make_image(lab_dir: Path, client: BuildClient, log: Log) -> Apptainer:
    """Make the lab's Apptainer image (cached), record it, and return the runtime."""
    recipe = hashlib.sha256(f"{SUITE}|{MIRROR}|{PACKAGES}".encode()).hexdigest()[:12]
    cache = lab_dir / "cache" / "rootfs"
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"apptainer-{SUITE}-{recipe}.tar"
    rootfs.bootstrap(tarball, SUITE, MIRROR, log, include=PACKAGES)
    image = f"factory/apptainer:{recipe}"
    rootfs.build_image(client, tarball, image, log, extra=(
        # The unprivileged user that runs `apptainer test` and `exec`.
        f'RUN echo "factory:x:{USER}:{USER}::/home/factory:/bin/sh" >> /etc/passwd \\\n'
        f' && echo "factory:x:{USER}:" >> /etc/group \\\n'
        f" && mkdir -p /home/factory && chown {USER}:{USER} /home/factory\n"))
    version = subprocess.run([client.path, "run", "--rm", image, "apptainer", "--version"],
                             capture_output=True, text=True, check=True).stdout.strip()
    apptainer.marker(lab_dir).write_text(f"{image} {version}\n")
    return Apptainer("container", "apptainer", image, client.path, version)
