"""Which Docker engine the lab installs: one whose ``docker save`` writes an OCI layout.

Apptainer's ``Bootstrap: docker-daemon`` starts with ``docker save``.  From Docker 25 on,
that archive is also an OCI image layout, which Apptainer reads as it is; from an older
engine (Debian 12's docker.io is 20.10) Apptainer gzips every layer into a temporary layout
and gunzips it again, which made converting a 770 MB image about 20 s slower (37 s of
fetching and unpacking instead of 16 s, before mksquashfs; see benchmarks/bench_convert.py).

Debian 12 has no newer engine, but Debian 13's docker.io, docker-cli and docker-buildx
packages install on it with Debian 12's containerd and runc.  So on bookworm the lab adds
trixie as an apt source pinned low (priority 100: nothing else is taken from it unless
asked for by name) and installs those three from it.  Other hosts keep their own engine.

Example::

    >>> engine_major("Docker version 26.1.5+dfsg1, build a72d7cd")
    26
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

OCI_SAVE_MAJOR = 25
NEWER_SUITE = {"bookworm": "trixie"}
PACKAGES = ("docker.io", "docker-cli", "docker-buildx")
SOURCE = Path("/etc/apt/sources.list.d/factory-newer-docker.sources")
PIN = Path("/etc/apt/preferences.d/factory-newer-docker")


def engine_major(version_line: str) -> int | None:
    found = re.search(r"(\d+)\.\d+", version_line)
    return int(found.group(1)) if found else None


def slow_conversion_note(version: str) -> str:
    """What an engine older than OCI_SAVE_MAJOR costs, for the lab's reports ("" if nothing)."""
    if (engine_major(version) or 0) >= OCI_SAVE_MAJOR:
        return ""
    return f"older than {OCI_SAVE_MAJOR}: SIF conversion recompresses every layer"


def installed_major() -> int | None:
    """The major version of the installed ``dockerd``, or None when there is none."""
    if not shutil.which("dockerd"):
        return None
    done = subprocess.run(["dockerd", "--version"], capture_output=True, text=True, check=False)
    return engine_major(done.stdout)


def codename(os_release: Path = Path("/etc/os-release")) -> str:
    if not os_release.exists():
        return ""
    found = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", os_release.read_text(), re.MULTILINE)
    return found.group(1) if found else ""


def newer_suite() -> str | None:
    """The apt suite to take the engine from, when this host's own engine is too old."""
    major = installed_major()
    if major is not None and major >= OCI_SAVE_MAJOR:
        return None
    return NEWER_SUITE.get(codename())


def host_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's apt already uses (deb.debian.org when none is found)."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        if path.is_file() and path != SOURCE:
            found = re.search(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s",
                              path.read_text(errors="replace"), re.MULTILINE)
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def add_source(suite: str, mirror: str) -> list[str]:
    """Add ``suite`` as a low-priority apt source; the package names to install from it."""
    SOURCE.write_text(f"# Written by the factory's `lab up`: {__doc__.splitlines()[0]}\n"
                      f"Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n"
                      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    PIN.write_text(f"Package: *\nPin: release n={suite}\nPin-Priority: 100\n")
    return [f"{name}/{suite}" for name in PACKAGES]
