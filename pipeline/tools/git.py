"""git, the one way the factory asks it anything: revisions, file listings, the source URL.

Example::

    describe(Path("."))  # Source(url='https://github.com/...', revision='36f5d2e...')
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


class GitMissing(RuntimeError):
    """git is not installed."""


@dataclass(frozen=True)
class Source:
    url: str
    revision: str


def git(folder: Path, *args: str) -> str | None:
    """git's standard output, or None when it fails (not a repository, unknown revision)."""
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                              check=False)
    except FileNotFoundError:
        raise GitMissing("git is not installed") from None
    return done.stdout if done.returncode == 0 else None


def describe(folder: Path) -> Source:
    """``PIPELINE_SOURCE_URL`` or the origin remote (credentials removed), and HEAD's commit."""
    try:
        url = os.environ.get("PIPELINE_SOURCE_URL") or (
            git(folder, "config", "--get", "remote.origin.url") or "").strip()
        revision = (git(folder, "rev-parse", "HEAD") or "").strip() or "unknown"
        dirty = revision != "unknown" and (
            git(folder, "status", "--porcelain", "--untracked-files=no") or "").strip()
    except GitMissing:
        url, revision, dirty = "", "unknown", False
    url = re.sub(r"//[^/@]+@", "//", url) if url else f"file://{folder.resolve()}"
    return Source(url, revision + ("-dirty" if dirty else ""))
