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
    stamp = path.parent / (path.name + ".digest")
    if stamp.exists() and stamp.stat().st_mtime >= path.stat().st_mtime:
        return stamp.read_text().strip()
    digest = sha256_file(path)
    stamp.write_text(digest)
    return digest
