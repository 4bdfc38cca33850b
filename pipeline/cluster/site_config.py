"""The site's settings: ``DIR/site.yaml``, written once with commented defaults, never overwritten.

What a site sets once for every container under its folder:

* ``binds``: folders every wrapper command binds into the container (``apptainer exec
  --bind``), each ``src[:dst[:ro|rw]]``, e.g. ``/scratch`` or ``/data/shared:/data:ro``;
* ``modules``: ``lmod`` (Lua modulefiles) or ``tcl`` (Environment Modules);
* ``apptainer``: the command the wrappers run (``apptainer``, ``singularity``, or a path);
* ``module_prefix``: a folder in front of every module name (``containers/`` gives
  ``containers/lammps/gnu-2022``), none by default.

The file is read with the catalogue's YAML reader, so every problem names its line
(``DIR/site.yaml:LINE: ...``) and numbers stay text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from pipeline.catalogue.yaml_reader import parse_yaml
from pipeline.cluster import layout
from pipeline.errors import Problems

SYSTEMS = ("lmod", "tcl")
SETTINGS = ("binds", "modules", "apptainer", "module_prefix")
# One folder of a module name: what Lmod and Environment Modules read as a name part.
NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
BIND_OPTIONS = ("ro", "rw")
BIND_PARTS = 3  # src:dst:options

DEFAULT_TEXT = """\
# The site's settings for the containers in this folder (hpc-container-factory).
# Written once with the defaults; edit it, then rewrite the modules and wrappers with
#   python -m pipeline cluster modules --dest DIR

# Folders every wrapper command binds into the container (apptainer exec --bind), each
# SRC[:DST[:ro|rw]], e.g.
#   binds: [/scratch, /data/shared:/data:ro]
# Apptainer binds $HOME, /tmp and the current folder by itself.  A SRC that does not exist
# on the node where a command runs makes that command fail.
binds: []

# The module system to write modulefiles for: lmod (Lua, DIR/modules/NAME/VERSION.lua) or
# tcl (Environment Modules, DIR/modules/NAME/VERSION).
modules: lmod

# The command the wrappers run: apptainer, singularity, or an absolute path.
apptainer: apptainer

# A folder in front of every module name, e.g. containers/ makes `module load
# containers/lammps/gnu-2022`.
# module_prefix: containers/
"""


@dataclass(frozen=True)
class SiteConfig:
    binds: tuple = ()  # "src[:dst[:opts]]", as apptainer's --bind takes them
    modules: str = "lmod"  # one of SYSTEMS
    apptainer: str = "apptainer"
    module_prefix: str = ""  # "" or "containers" (no slash at either end)


def path(dest: Path) -> Path:
    return dest / layout.SITE


def load(dest: Path) -> SiteConfig:
    """``DIR/site.yaml`` read and checked (written with the defaults first when missing);
    InputError listing every problem."""
    file = path(dest)
    ensure(dest)
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as err:
        problems = Problems(str(file))
        problems.add(None, f"cannot read it ({err}); fix the file or remove it to get the "
                           "defaults back")
        problems.raise_if_any()
    return parse(text, str(file))


def ensure(dest: Path) -> Path:
    """Write the default ``DIR/site.yaml`` unless there is one: a site's edits are never lost."""
    file = path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with open(file, "x") as out:  # "x": never replaces a file another process just wrote
            out.write(DEFAULT_TEXT)
    except FileExistsError:
        pass
    return file


def parse(text: str, file: str) -> SiteConfig:
    """The settings in ``text`` (the content of ``file``)."""
    doc = parse_yaml(text, file)
    problems = Problems(file)
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        problems.add(doc.line(()), "site.yaml must be a mapping of settings ("
                                   + ", ".join(SETTINGS) + ")")
        problems.raise_if_any()
    for key in data:
        if key not in SETTINGS:
            problems.add(doc.line((key,)), f"unknown setting '{key}'; the settings are "
                                           + ", ".join(SETTINGS))
    binds = data.get("binds")
    if binds is None:
        binds = []
    elif not isinstance(binds, list):
        problems.add(doc.line(("binds",)), "binds must be a list of SRC[:DST[:ro|rw]], "
                                           "e.g. binds: [/scratch]")
        binds = []
    for i, bind in enumerate(binds):
        wrong = bind_problem(bind)
        if wrong:
            problems.add(doc.line(("binds", i)), wrong)
    system = data.get("modules", SiteConfig.modules)
    if system not in SYSTEMS:
        problems.add(doc.line(("modules",)), f"modules must be lmod or tcl, not {system!r}")
    command = data.get("apptainer", SiteConfig.apptainer)
    if (not isinstance(command, str) or not command or command.startswith("-")
            or any(c.isspace() or _has_control(c) for c in command)):
        problems.add(doc.line(("apptainer",)), "apptainer must be one command without "
                                               "options: apptainer, singularity or a path, "
                                               f"not {command!r}")
    prefix = data.get("module_prefix") or ""
    if not isinstance(prefix, str) or not all(
            NAME_PART.fullmatch(part) for part in prefix.strip("/").split("/") if prefix):
        problems.add(doc.line(("module_prefix",)),
                     "module_prefix must be folder names of letters, digits and ._+- "
                     f"separated by /, e.g. containers/, not {prefix!r}")
    problems.items.sort(key=lambda p: p.line or 0)  # in the file's order
    problems.raise_if_any()
    return SiteConfig(tuple(binds), system, command, prefix.strip("/"))


def bind_problem(bind) -> str | None:
    """Why ``bind`` is no ``src[:dst[:ro|rw]]`` apptainer takes, or None."""
    if not isinstance(bind, str):
        return f"a bind must be a path, SRC[:DST[:ro|rw]], not {bind!r}"
    parts = bind.split(":")
    if len(parts) > BIND_PARTS or _has_control(bind) or "," in bind:
        return (f"bind {bind!r} must be SRC[:DST[:ro|rw]] with no comma (apptainer splits "
                "--bind at commas)")
    if not all(p.startswith("/") for p in parts[:2]):
        return f"bind {bind!r}: SRC and DST must be absolute paths, e.g. /scratch"
    if len(parts) == BIND_PARTS and parts[-1] not in BIND_OPTIONS:
        return f"bind {bind!r}: the options after the second ':' must be ro or rw"
    return None


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)
