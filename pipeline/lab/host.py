"""What the lab needs on the host, and installing what is missing with apt."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ARCH_OF_MACHINE = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
QEMU_NAME = {"amd64": "x86_64", "arm64": "aarch64"}
BINFMT = Path("/proc/sys/fs/binfmt_misc")


@dataclass(frozen=True)
class Need:
    what: str
    commands: tuple  # all must be on PATH
    packages: tuple  # Debian packages that provide them


NEEDS = (
    Need("Docker engine", ("dockerd", "containerd", "runc"), ("docker.io", "containerd", "runc")),
    Need("docker client with BuildKit", ("docker",), ("docker.io",)),
    Need("OCI registry", ("docker-registry",), ("docker-registry",)),
    Need("QEMU user emulation", ("qemu-aarch64-static", "update-binfmts"),
         ("qemu-user-static", "binfmt-support")),
    Need("Debian bootstrap", ("mmdebstrap", "arch-test"), ("mmdebstrap", "arch-test")),
    # Reads published manifest lists back independently of the factory's own client.
    Need("registry inspection", ("skopeo",), ("skopeo",)),
)


def host_arch() -> str:
    return ARCH_OF_MACHINE.get(platform.machine(), platform.machine())


def missing() -> list[Need]:
    out = [n for n in NEEDS if not all(shutil.which(c) for c in n.commands)]
    # A docker on PATH may be a client without buildx (this kind of machine ships one in
    # /usr/local/bin); Debian's package puts one that can build with BuildKit in /usr/bin.
    if not Path("/usr/bin/docker").exists() and all(n.what != "docker client with BuildKit"
                                                    for n in out):
        out.append(NEEDS[1])
    return out


def can_apt() -> bool:
    return shutil.which("apt-get") is not None and os.geteuid() == 0


def apt_install(packages: list[str], log: Path) -> None:
    """``apt-get update`` then install; RuntimeError naming the log on failure."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                              check=False).returncode:
                raise RuntimeError(f"`{' '.join(argv)}` failed; see {log}")


def binfmt_state(arch: str) -> str | None:
    """'enabled F' style state of the QEMU handler for ``arch``, or None when not registered."""
    entry = BINFMT / f"qemu-{QEMU_NAME[arch]}"
    if not entry.exists():
        return None
    lines = entry.read_text().splitlines()
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    return f"{lines[0]} (flags {flags})"


def enable_binfmt(arch: str) -> None:
    """Mount binfmt_misc if needed and enable QEMU for ``arch`` (F flag: works in containers)."""
    if not (BINFMT / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True,
                       capture_output=True)
    state = binfmt_state(arch)
    if state is None or not state.startswith("enabled"):
        subprocess.run(["update-binfmts", "--enable", f"qemu-{QEMU_NAME[arch]}"], check=True,
                       capture_output=True)
    state = binfmt_state(arch) or ""
    if not state.startswith("enabled") or "F" not in state.split("flags")[-1]:
        raise RuntimeError(f"QEMU for {arch} is not usable ({state or 'not registered'}): it must "
                           "be enabled with the F flag so that containers can use it")


def tool_version(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "installed"
