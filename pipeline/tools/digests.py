"""The sha256 of a file, streamed (SIFs and root filesystems are gigabytes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of ``data`` (a manifest, a small blob, a downloaded file)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of the file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def cached_sha256_file(path: Path) -> str:
    """``sha256_file`` remembered in ``<path>.digest`` while the file is not newer than it."""
    stamp = _stamp(path)
    if stamp.exists() and stamp.stat().st_mtime >= path.stat().st_mtime:
        return stamp.read_text().strip()
    digest = sha256_file(path)
    remember_sha256(path, digest)
    return digest


def remember_sha256(path: Path, digest: str) -> None:
    """Record ``digest`` for ``path`` (computed while writing it) as ``cached_sha256_file``
    would, so that the next read need not hash the file again."""
    _stamp(path).write_text(digest)


def _stamp(path: Path) -> Path:
    return path.parent / (path.name + ".digest")
