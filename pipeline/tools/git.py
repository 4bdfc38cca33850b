"""git, the one way the factory asks it anything: revisions, file listings, the source URL.

Example::

    describe(Path("."))  # Source(url='https://github.com/...', revision='36f5d2e...')
    commit_time(Path("."), "36f5d2e...")  # '2025-03-14T09:26:53Z'
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# The time of what has no commit time (a dirty tree, an unknown revision): fixed, like
# SOURCE_DATE_EPOCH=0, so that what is stamped with it does not change between reruns.
EPOCH = "1970-01-01T00:00:00Z"


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


def commit_time(folder: Path, revision: str) -> str:
    """The committer time of ``revision`` as ISO-8601 UTC (``%Y-%m-%dT%H:%M:%SZ``).

    A ``-dirty`` or unknown revision (or no git) gives ``EPOCH``: the commit's time would
    not date uncommitted content, and now would differ on every rerun."""
    if not revision or revision == "unknown" or revision.endswith("-dirty") or (
            revision.startswith("-")):
        return EPOCH
    try:
        out = (git(folder, "show", "-s", "--format=%ct", f"{revision}^{{commit}}") or "").strip()
    except GitMissing:
        return EPOCH
    if not out.isdigit():
        return EPOCH
    return datetime.fromtimestamp(int(out), timezone.utc).strftime(TIME_FORMAT)
