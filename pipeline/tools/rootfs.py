"""Root filesystems made with mmdebstrap, and images made from them with ``FROM scratch``.

Both the OS bases (``os_bases.py``) and the lab's Apptainer image come this way, since
Docker Hub may be out of reach.  ``docker import`` would record the host's architecture
even for an arm64 rootfs; a ``FROM scratch`` / ``ADD rootfs.tar /`` build with
``--platform`` records the right one.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from pipeline.tools.docker_engine import BuildClient
from pipeline.tools.processes import Log, run_logged


def bootstrap(tarball: Path, suite: str, mirror: str, log: Log, *, arch: str | None = None,
              include: str = "") -> Path:
    """``tarball`` (cached: made once) holding a minbase ``suite`` from ``mirror``.

    CalledProcessError when mmdebstrap fails; no partial tarball is left behind.
    """
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tar")
    argv = ["mmdebstrap", "--variant=minbase",
            # sid's (and sometimes trixie's) Release is past its Valid-Until; the signature
            # is still checked.
            "--aptopt=Acquire::Check-Valid-Until \"false\""]
    argv += [f"--architectures={arch}"] if arch else []
    argv += [f"--include={include}"] if include else []
    # A fixed SOURCE_DATE_EPOCH makes the tarball depend only on the package versions.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0"}
    try:
        run_logged([*argv, suite, str(partial), mirror], log, env=env)
    except subprocess.CalledProcessError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(tarball)
    return tarball


def build_image(client: BuildClient, tarball: Path, reference: str, log: Log, *,
                platform: str | None = None, extra: str = "",
                labels: dict | None = None) -> None:
    """Build ``reference`` FROM scratch with ``tarball`` as its root filesystem.

    ``extra`` is more Dockerfile text (e.g. ``RUN`` lines), run with the host's network;
    ``labels`` go on the image (``--label``, no Dockerfile quoting to get wrong).
    """
    with tempfile.TemporaryDirectory(dir=tarball.parent) as context:
        os.link(tarball, Path(context) / "rootfs.tar")  # no copy of a large file
        (Path(context) / "Dockerfile").write_text(
            'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' + extra)
        argv = [*client.build_argv(), "-t", reference]
        argv += ["--platform", platform] if platform else []
        argv += ["--network", "host"] if extra else []
        argv += [x for key, value in (labels or {}).items() for x in ("--label", f"{key}={value}")]
        run_logged([*argv, context], log, env=client.env())
