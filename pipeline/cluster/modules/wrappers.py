"""The wrapper commands: ``DIR/wrappers/NAME/VERSION/bin/COMMAND``, one per image command.

Each is a small POSIX sh script that runs the command in the SIF::

    exec apptainer exec [--nv] [--bind B ...] SIF COMMAND "$@"

``--nv`` only for GPU images; the binds are the site's (``site.yaml``).  The script finds
the site folder from its own path (four folders up, through a symlink to it too) and the
SIF from the node's ``uname -m``, so the tree still works where a bundle is imported at
another path, and on each partition of a mixed cluster.
"""

from __future__ import annotations

from pipeline.cluster.modules import tree
from pipeline.cluster.modules.entries import Entry
from pipeline.cluster.modules.quoting import sh
from pipeline.cluster.site_config import SiteConfig

MODE = 0o755


def render(entry: Entry, command: str, site: SiteConfig) -> str:
    cases = [f"  {sh(s.machine)}) sif=$site/{sh(s.path)} ;;" for s in entry.sifs]
    machines = ", ".join(s.machine for s in entry.sifs)
    missing = sh(f"{command}: the site folder has no SIF of {entry.image} for ")
    options = [*(["--nv"] if entry.gpu else []),
               *(f"--bind {sh(b)}" for b in site.binds)]
    run = " ".join([sh(site.apptainer), "exec", *options, '"$sif"', sh(command), '"$@"'])
    return "\n".join([
        "#!/bin/sh",
        f"# {tree.MARKER}",
        f"# {command} of {entry.image} (module {entry.name}/{entry.version}), in its SIF.",
        'self=$(readlink -f -- "$0" 2>/dev/null) || self=$0',
        'site=$(CDPATH="" cd -- "$(dirname -- "$self")/../../../.." && pwd) || exit 1',
        'machine=$(uname -m)',
        'case $machine in',
        *cases,
        f'  *) echo {missing}"$machine"{sh(f" (it has one for {machines})")} >&2',
        "     exit 1 ;;",
        "esac",
        f"exec {run}",
    ]) + "\n"
