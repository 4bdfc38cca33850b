"""Where the generated files go, and writing the whole set again each time.

Each call writes every module and wrapper of the slice and removes the ones this code
wrote for tags no longer in it (or for the other module system): a generated file carries
:data:`MARKER` in its first lines, so a site's own files beside them (an Lmod ``.modulerc``
that sets defaults, say) are never touched.  Each file is written under a temporary name
and renamed into place, and only when its content changed, so a job that reads a module
or starts a wrapper meanwhile sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.cluster import layout
from pipeline.cluster.modules.entries import Entry
from pipeline.cluster.site_config import SiteConfig

MARKER = "Written by hpc-container-factory (python -m pipeline cluster modules); edits are lost."
_HEAD = 512  # the marker is in the first lines of every generated file


def module_name(entry: Entry, site: SiteConfig) -> str:
    """What users load: ``lammps/gnu-2022``, or ``containers/lammps/gnu-2022``."""
    return "/".join(p for p in (site.module_prefix, entry.name, entry.version) if p)


def module_file(dest: Path, entry: Entry, site: SiteConfig, system: str) -> Path:
    suffix = ".lua" if system == "lmod" else ""
    return dest / layout.MODULES / (module_name(entry, site) + suffix)


def levels(site: SiteConfig) -> int:
    """How many parent steps lead from a modulefile to the site folder
    (``modules/[PREFIX/]NAME/VERSION``)."""
    return 3 + len(module_name_parts(site))


def module_name_parts(site: SiteConfig) -> list[str]:
    return site.module_prefix.split("/") if site.module_prefix else []


def wrappers_dir(entry: Entry) -> str:
    """The wrappers' folder relative to the site folder: ``wrappers/lammps/gnu-2022/bin``;
    a wrapper finds the site folder four levels above its own."""
    return f"{layout.WRAPPERS}/{entry.name}/{entry.version}/bin"


def write(dest: Path, files: dict) -> None:
    """Write ``files`` ({path: (text, mode)}) and remove the generated files not in it."""
    for path, (text, mode) in files.items():
        _write(path, text, mode)
    for root in (dest / layout.MODULES, dest / layout.WRAPPERS):
        _remove_stale(root, set(files))


def _write(path: Path, text: str, mode: int) -> None:
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.chmod(mode)
    os.replace(partial, path)


def _remove_stale(root: Path, keep: set) -> None:
    if not root.is_dir():
        return
    emptied = set()
    for path in sorted(root.rglob("*")):
        if path in keep or path.is_symlink() or not path.is_file() or not generated(path):
            continue
        path.unlink()
        emptied.add(path.parent)
    for start in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        folder = start
        while folder != root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def generated(path: Path) -> bool:
    """Whether ``path`` is a file this code wrote (its first lines hold the marker)."""
    try:
        with open(path, "rb") as handle:
            return MARKER.encode() in handle.read(_HEAD)
    except OSError:
        return False
