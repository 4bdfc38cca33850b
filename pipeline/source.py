"""Where the recipes come from: the source URL and revision recorded in every image's labels."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    url: str
    revision: str


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def describe(folder: Path) -> Source:
    """``PIPELINE_SOURCE_URL`` or the origin remote (credentials removed), and HEAD's commit."""
    url = os.environ.get("PIPELINE_SOURCE_URL") or _git(folder, "config", "--get",
                                                         "remote.origin.url")
    url = re.sub(r"//[^/@]+@", "//", url) if url else f"file://{folder.resolve()}"
    revision = _git(folder, "rev-parse", "HEAD") or "unknown"
    if revision != "unknown" and _git(folder, "status", "--porcelain", "--untracked-files=no"):
        revision += "-dirty"
    return Source(url, revision)
