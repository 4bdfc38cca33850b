"""The files a plan is made from: the working tree, or the same folder at a git revision.

Recipe content is identified by git blob ids (``sha1("blob N\\0" + bytes)``), computed here
for the working tree and read from ``git ls-tree`` for a revision, so that comparing the two
needs no file content from history at all.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError, Problem
from pipeline.tools.git import GitMissing, git

FileEntry = tuple[str, str, str]  # (path relative to the catalogue root, git mode, blob id)


def blob_id(data: bytes) -> str:
    """The git blob id of ``data``; ``git hash-object`` gives the same."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class WorkTree:
    """The catalogue folder on disk (the folder holding matrix.yaml)."""

    root: Path
    _cache: dict = field(default_factory=dict, repr=False)

    def read_text(self, path: str) -> str | None:
        try:
            return (self.root / path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def is_dir(self, path: str) -> bool:
        return (self.root / path).is_dir()

    def exists(self, path: str) -> bool:
        return (self.root / path).exists()

    def files(self, path: str) -> tuple[FileEntry, ...]:
        """Every file at or below ``path``, sorted, with mode and blob id."""
        if path not in self._cache:
            self._cache[path] = tuple(sorted(self._walk(path)))
        return self._cache[path]

    def _walk(self, path: str):
        top = self.root / path
        if top.is_file() or top.is_symlink():
            yield self._entry(top)
            return
        for folder, dirs, names in os.walk(top):
            dirs.sort()
            for name in names:
                yield self._entry(Path(folder) / name)

    def _entry(self, file: Path) -> FileEntry:
        rel = file.relative_to(self.root).as_posix()
        info = file.lstat()
        if stat.S_ISLNK(info.st_mode):
            return rel, "120000", blob_id(os.readlink(file).encode())
        mode = "100755" if info.st_mode & stat.S_IXUSR else "100644"
        return rel, mode, blob_id(file.read_bytes())


@dataclass
class GitTree:
    """The catalogue folder as it was at a git revision (for ``--changed-from``)."""

    repo: Path
    rev: str
    prefix: str  # the catalogue folder relative to the repository top, '' or 'a/b/'
    entries: dict  # path relative to the catalogue -> (mode, blob)

    @classmethod
    def at(cls, folder: Path, rev: str) -> GitTree:
        """Open ``folder`` as it was at ``rev``; InputError when either is not git's."""
        top = _git(folder, "rev-parse", "--show-toplevel",
                   error=f"{folder} is not inside a git repository, so --changed-from cannot "
                         "compare; run from a clone or leave --changed-from out").strip()
        _git(folder, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}",
             error=f"--changed-from {rev}: not a commit in this repository; give a branch, "
                   "tag or commit (fetch it first in a shallow clone)")
        prefix = Path(folder).resolve().relative_to(Path(top).resolve()).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        listing = _git(folder, "ls-tree", "-r", "-z", "--full-tree", rev,
                       error="git ls-tree failed")
        entries = {}
        for record in listing.split("\0"):
            if not record:
                continue
            meta, path = record.split("\t", 1)
            mode, kind, blob = meta.split()
            if kind == "blob" and path.startswith(prefix):
                entries[path[len(prefix):]] = (mode, blob)
        return cls(Path(top), rev, prefix, entries)

    def read_text(self, path: str) -> str | None:
        if path not in self.entries:
            return None
        return _git(self.repo, "cat-file", "blob", self.entries[path][1],
                    error="git cat-file failed")

    def is_dir(self, path: str) -> bool:
        folder = path.rstrip("/") + "/"
        return any(p.startswith(folder) for p in self.entries)

    def exists(self, path: str) -> bool:
        return path in self.entries or self.is_dir(path)

    def files(self, path: str) -> tuple[FileEntry, ...]:
        folder = path.rstrip("/") + "/"
        return tuple(sorted((p, m, b) for p, (m, b) in self.entries.items()
                            if p == path or p.startswith(folder)))


def _git(cwd: Path, *args: str, error: str) -> str:
    try:
        out = git(cwd, *args)
    except GitMissing:
        raise InputError([Problem("git", None, "git is not installed; install it to use "
                                  "--changed-from")]) from None
    if out is None:
        raise InputError([Problem("git", None, error)])
    return out
