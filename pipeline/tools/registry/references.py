"""Image references: which registry host they name, its API URL, and site mirrors.

Example::

    >>> split_reference("rockylinux:8")
    ('docker.io', 'library/rockylinux', '8')
    >>> mirrored("docker.io/library/x:1", {"docker.io": "m:5000"})
    'm:5000/library/x:1'
"""

from __future__ import annotations

# Docker Hub's registry API is not served at the name images are known by.
API_HOSTS = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}


def is_local(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0]
    return host == "localhost" or registry.startswith(("127.", "[::1]"))


def base_url(registry: str) -> str:
    """``127.0.0.1:5000`` -> ``http://127.0.0.1:5000``; ``docker.io`` -> its API host."""
    registry = API_HOSTS.get(registry, registry)
    return f"{'http' if is_local(registry) else 'https'}://{registry}"


def split_reference(reference: str) -> tuple[str, str, str]:
    """``x:1`` -> (``docker.io``, ``library/x``, ``1``); ``Registry`` knows Docker Hub's API
    host."""
    first, _, rest = reference.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        first, rest = "docker.io", reference
    name, _, tag = rest.rpartition(":") if ":" in rest.split("/")[-1] else (rest, "", "latest")
    if first == "docker.io" and "/" not in name:
        name = f"library/{name}"
    return first, name, tag or "latest"


def mirrored(reference: str, mirrors: dict) -> str:
    """``docker.io/library/x:1`` with ``{"docker.io": "m:5000"}`` -> ``m:5000/library/x:1``."""
    source = registry_of(reference)
    if source in mirrors:
        return mirrors[source] + reference[len(source):]
    return reference


def registry_of(reference: str) -> str:
    first = reference.split("/", 1)[0]
    return first if "/" in reference and ("." in first or ":" in first) else "docker.io"
