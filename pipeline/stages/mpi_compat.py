"""Can the host's MPI launch the container's?  Asked before the mpi-hybrid test runs.

In the hybrid model the host's ``mpirun`` starts the ranks and the MPI library inside the
container talks to it (PMI/PMIx), so both sides must agree:

* Open MPI: same family and the same major version (4.x launches 4.y, not 5.x);
* the MPICH ABI family (MPICH, Intel MPI, MVAPICH, Cray MPICH: all ``libmpi.so.12``): the
  host runtime must not be older than the container's.  Versions of different vendors are
  not comparable, so across vendors the host must be seen to provide ``libmpi.so.12``;
* Open MPI and the MPICH family never mix;
* a host whose family or version is unknown is not trusted.

Which host MPIs there are (:func:`host_mpis`): with a host Apptainer, the host's ``mpirun``
(``PIPELINE_HOST_MPI`` or ``mpirun`` on PATH).  With the lab's containerized Apptainer the
"host" is the lab's cluster node (``pipeline/lab/node_image.py``), whose MPIs ``lab up``
recorded; ``PIPELINE_HOST_MPI`` then names one of the node's ``mpirun`` (e.g.
``/usr/bin/mpirun.mpich``) to use instead of choosing: a host program could not start ranks
inside the node's container, and a path the node does not have is refused with the list of
those it has.  :func:`choose` picks the one that can launch the container's MPI.

Example::

    host = detect_host_mpi()  # HostMpi('/usr/bin/mpirun', 'openmpi', '4.1.4', None)
    ok, reason = compatible("openmpi", "4.1", host.family, host.version, host.soname)
    host, reason = choose("mpich", "4.0", host_mpis(ctx.apptainer))
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.tools.apptainer import Apptainer

NAMES = {"openmpi": "Open MPI", "mpich": "MPICH", "intelmpi": "Intel MPI",
         "mvapich": "MVAPICH", "craympich": "Cray MPICH"}
MPICH_ABI = frozenset({"mpich", "intelmpi", "mvapich", "craympich"})
MPICH_SONAME = "libmpi.so.12"
_ALIASES = {"ompi": "openmpi", "openmpi": "openmpi", "mpich": "mpich", "impi": "intelmpi",
            "intel": "intelmpi", "intelmpi": "intelmpi", "mvapich": "mvapich",
            "mvapich2": "mvapich", "mvapich3": "mvapich", "cray": "craympich",
            "craympich": "craympich"}
HOST_MPI_VARIABLE = "PIPELINE_HOST_MPI"
VERSION_TIMEOUT = 30


def family_of(name: str | None) -> str | None:
    """``openmpi``, ``mpich``, ``intelmpi``, ``mvapich``, ``craympich``, or None."""
    if not name:
        return None
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower()))


def _label(family: str | None, raw: str | None) -> str:
    return NAMES.get(family or "", raw or "an unknown MPI")


def _numbers(version: str | None) -> tuple[int, ...] | None:
    found = re.match(r"\s*(\d+(?:\.\d+)*)", version or "")
    return tuple(int(n) for n in found.group(1).split(".")) if found else None


def compatible(container_family: str, container_version: str, host_family: str | None,
               host_version: str | None, host_soname: str | None = None) -> tuple[bool, str]:
    """(whether the host's MPI can launch the container's, why)."""
    c_family, h_family = family_of(container_family), family_of(host_family)
    c_name, h_name = _label(c_family, container_family), _label(h_family, host_family)
    theirs = f"the container's {c_name} {container_version}".rstrip()
    if c_family is None:
        return False, f"the container's MPI '{container_family}' is not one this check knows"
    if h_family is None:
        return False, (f"cannot tell which MPI the host's mpirun is ('{host_family or '?'}'), "
                       f"so not whether it can launch {theirs}")
    ours = f"host {h_name} {host_version or ''}".rstrip()
    if (c_family == "openmpi") != (h_family == "openmpi"):
        return False, f"{ours} cannot launch {theirs}: different MPI families"
    h_numbers, c_numbers = _numbers(host_version), _numbers(container_version)
    if h_numbers is None:
        return False, (f"the host {h_name}'s version is unknown, so not whether it can "
                       f"launch {theirs}")
    if c_numbers is None:
        return False, f"{theirs} has no known version, so {ours} may not match it"
    pair = _Pair(ours, theirs, h_family != c_family, h_numbers, c_numbers, host_soname)
    return _same_open_mpi_major(pair) if c_family == "openmpi" else _mpich_abi(pair)


@dataclass(frozen=True)
class _Pair:
    ours: str  # "host MPICH 4.0"
    theirs: str  # "the container's MPICH 4.2"
    other_vendor: bool  # e.g. Intel MPI on the host, MPICH in the container
    host: tuple  # version numbers
    container: tuple
    soname: str | None  # the host library's, when known


def _same_open_mpi_major(p: _Pair) -> tuple[bool, str]:
    if p.host[0] != p.container[0]:
        return False, f"{p.ours} cannot launch {p.theirs}: different major version"
    return True, f"{p.ours} launches {p.theirs} (same major version)"


def _mpich_abi(p: _Pair) -> tuple[bool, str]:
    if p.soname is not None and p.soname != MPICH_SONAME:
        return False, (f"{p.ours} provides {p.soname}, not {MPICH_SONAME} (the MPICH ABI) "
                       f"that {p.theirs} uses")
    if p.other_vendor:
        if p.soname != MPICH_SONAME:
            return False, (f"cannot tell whether {p.ours} provides {MPICH_SONAME} (the MPICH "
                           f"ABI), which {p.theirs} needs")
        return True, (f"{p.ours} launches {p.theirs} through the MPICH ABI ({MPICH_SONAME}; "
                      "versions of different vendors are not compared)")
    if p.host[:len(p.container)] < p.container:
        return False, f"{p.ours} is older than {p.theirs}"
    return True, f"{p.ours} launches {p.theirs} (MPICH ABI, not older)"


@dataclass(frozen=True)
class HostMpi:
    mpirun: str
    family: str | None
    version: str | None
    soname: str | None = None
    where: str = ""  # "" on the host itself; "on the lab's node" for the node's MPIs

    def describe(self) -> str:
        """``Open MPI 4.1.4 (/usr/bin/mpirun)``, ``MPICH 5.0.2 (/usr/bin/mpirun.mpich on the
        lab's node)``."""
        name = _label(self.family, None)
        place = f"{self.mpirun} {self.where}".rstrip()
        return f"{name} {self.version or '(unknown version)'} ({place})"


class HostMpiMissing(RuntimeError):
    """No usable mpirun on the host; the message says why."""


def parse_version_output(output: str) -> tuple[str | None, str | None]:
    """(family, version) from ``mpirun --version``; (None, None) when not recognised."""
    patterns = [
        ("openmpi", r"\(Open MPI\)\s+(\d[\w.]*)"),
        ("intelmpi", r"Intel\(R\) MPI Library.*?Version\s+(\d[\w.]*)"),
        ("mvapich", r"MVAPICH\d?\s+Version:?\s+(\d[\w.]*)"),
        ("craympich", r"Cray MPICH.*?Version:?\s+(\d[\w.]*)"),
        ("mpich", r"HYDRA build details:.*?Version:\s+(\d[\w.]*)"),
        ("mpich", r"MPICH\s+Version:\s+(\d[\w.]*)"),
    ]
    for family, pattern in patterns:
        found = re.search(pattern, output, re.DOTALL)
        if found:
            return family, found.group(1).rstrip(".")
    if "Open MPI" in output or "OpenRTE" in output:
        return "openmpi", None
    if "HYDRA" in output:
        return "mpich", None
    return None, None


def find_mpirun(env: Mapping[str, str] | None = None,
                which: Callable[[str], str | None] = shutil.which) -> str:
    """``PIPELINE_HOST_MPI`` when set, else ``mpirun`` on PATH; HostMpiMissing otherwise."""
    env = os.environ if env is None else env
    given = env.get(HOST_MPI_VARIABLE, "").strip()
    if given:
        path = Path(given)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise HostMpiMissing(f"{HOST_MPI_VARIABLE}={given} is not an executable file")
        return str(path)
    found = which("mpirun")
    if found is None:
        raise HostMpiMissing("the host has no mpirun")
    return found


def soname_of(libraries: Sequence[str]) -> str | None:
    """``libmpi.so.12`` when these library file names include the MPICH ABI's, else None."""
    if any(re.match(r"lib(mpi|mpich)\.so\.12(\.|$)", name) for name in libraries):
        return MPICH_SONAME
    return None


def mpich_soname(mpirun: str) -> str | None:
    """``libmpi.so.12`` when the installation ``mpirun`` belongs to ships it, else None."""
    prefix = Path(os.path.realpath(mpirun)).parent.parent
    return soname_of([p.name for pattern in ("lib*/libmpi*.so.*", "lib*/*/libmpi*.so.*")
                      for p in prefix.glob(pattern)])


def host_mpi_from(mpirun: str, version_output: str, libraries: Sequence[str] = (),
                  where: str = "") -> HostMpi:
    """A HostMpi from what an ``mpirun`` said of itself and its installation's libraries."""
    family, version = parse_version_output(version_output)
    soname = soname_of(libraries) if family in MPICH_ABI else None
    return HostMpi(mpirun, family, version, soname, where)


NODE = "on the lab's node"


def host_mpis(runtime: Apptainer, env: Mapping[str, str] | None = None) -> list[HostMpi]:
    """The MPIs that may launch ``apptainer exec`` ranks for this runtime (see the module's
    text); HostMpiMissing with the reason when there is none to try."""
    if runtime.kind == "host":
        return [detect_host_mpi(env)]
    if runtime.node is None:
        raise HostMpiMissing("the lab runs Apptainer in a container and has no cluster node "
                             "image to run a host MPI on; run `python -m pipeline lab up`")
    found = [host_mpi_from(m.mpirun, m.version_output, m.libraries, NODE)
             for m in runtime.node.mpis]
    if not found:
        raise HostMpiMissing(f"the lab's node {runtime.node.image} has no mpirun")
    env = os.environ if env is None else env
    given = env.get(HOST_MPI_VARIABLE, "").strip()
    if not given:
        return found
    chosen = [h for h in found if h.mpirun == given]
    if not chosen:
        raise HostMpiMissing(f"{HOST_MPI_VARIABLE}={given} is not an mpirun of the lab's node "
                             f"(it has {', '.join(h.mpirun for h in found)})")
    return chosen


def choose(container_family: str, container_version: str,
           hosts: Sequence[HostMpi]) -> tuple[HostMpi | None, str]:
    """The host MPI that launches the container's (one of its own family first), with why;
    else (None, why not), naming only the host MPIs of the container's family (Open MPI, or
    the MPICH ABI family) unless the host has none of it."""
    verdicts = [(h, *compatible(container_family, container_version, h.family, h.version,
                                h.soname)) for h in hosts]
    mine = family_of(container_family)
    good = sorted((v for v in verdicts if v[1]), key=lambda v: family_of(v[0].family) != mine)
    if good:
        return good[0][0], good[0][2]
    side = _side(mine)
    relevant = [why for host, _, why in verdicts
                if side is not None and _side(family_of(host.family)) == side]
    reasons = relevant or [why for _, _, why in verdicts]
    return None, "; ".join(dict.fromkeys(reasons)) or "no host MPI to try"


def _side(family: str | None) -> str | None:
    """The ABI side a family is on: ``openmpi`` or ``mpich`` (the MPICH ABI family)."""
    if family is None:
        return None
    return "openmpi" if family == "openmpi" else "mpich"


def detect_host_mpi(env: Mapping[str, str] | None = None,
                    which: Callable[[str], str | None] = shutil.which) -> HostMpi:
    """The host's mpirun, its family and version (HostMpiMissing when there is none)."""
    mpirun = find_mpirun(env, which)
    try:
        done = subprocess.run([mpirun, "--version"], capture_output=True, text=True,
                              check=False, timeout=VERSION_TIMEOUT)
        output = done.stdout + done.stderr
    except (OSError, subprocess.TimeoutExpired):
        output = ""
    family, version = parse_version_output(output)
    soname = mpich_soname(mpirun) if family in MPICH_ABI else None
    return HostMpi(mpirun, family, version, soname)
