"""Modulefiles and wrapper commands for the tags a site folder holds.

``write_modules(DIR)`` reads ``DIR/catalog.json`` (the slice ``cluster pull`` or ``cluster
import`` placed) and ``DIR/site.yaml`` (``site_config``), and writes, for every tag with a
SIF:

* one module: Lmod ``DIR/modules/NAME/VERSION.lua`` (``lua``) or Environment Modules
  ``DIR/modules/NAME/VERSION`` (``tcl``), with ``whatis`` and ``help`` (``content``: the
  cell, the SIF and its digest, the hybrid MPI launch lines), ``conflict NAME``, the
  wrappers on ``PATH``, and ``NAME_SIF``/``NAME_IMAGE`` for job scripts;
* one wrapper per command of the image (``wrappers``): ``apptainer exec`` of the SIF.

Everything is written again on each call, and what an earlier call wrote for a tag no
longer in the slice is removed (``tree``).  Catalogue values only reach the files quoted
(``quoting``); names that become paths are checked first (``entries``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cluster import site_config
from pipeline.cluster.modules import entries, lua, tcl, tree, wrappers
from pipeline.cluster.modules.content import content

RENDERERS = {"lmod": lua.render, "tcl": tcl.render}
MODULE_MODE = 0o644


def write_modules(dest: Path, system: str | None = None) -> list[Path]:
    """Write the modules and wrappers of ``dest``'s slice for ``system`` (``lmod`` or
    ``tcl``; None: ``site.yaml``'s choice); returns the modulefiles, sorted.  InputError
    (exit 2) on a bad ``site.yaml`` or catalogue."""
    site = site_config.load(dest)
    system = system or site.modules
    if system not in RENDERERS:
        raise ValueError(f"module system {system!r}: expected one of {', '.join(RENDERERS)}")
    files: dict = {}
    modules = []
    for entry in entries.read(dest):
        path = tree.module_file(dest, entry, site, system)
        files[path] = (RENDERERS[system](content(entry, site)), MODULE_MODE)
        modules.append(path)
        folder = dest / tree.wrappers_dir(entry)
        for command in entry.commands:
            files[folder / command] = (wrappers.render(entry, command, site), wrappers.MODE)
    tree.write(dest, files)
    return sorted(modules)
