"""Sessions: the README's two commands and their helpers.

    nox -s pipeline   the main job: lab up, then build, test and publish the default selection
    nox -s tests      the whole test suite: unit, then integration (brings the lab up itself)
    nox -s unit       the unit tests alone: no Docker, no root, no network, under 30 s
    nox -s lab        `python -m pipeline lab up|status|down` (default: status)
    nox -s plan       print the build plan (arguments go to `python -m pipeline plan`)
    nox -s bench      the benchmarks under benchmarks/, each printing its figures
"""

from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent

# What `nox -s pipeline` builds when no --select is given: one Debian 12 base cell and
# the LAMMPS image on it, for both arches.  The whole catalogue takes hours under QEMU.
DEFAULT_SELECT = "sjtuhpc/hpc-app-container:lammps-gnu-2022@*"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole suite, unit then integration (pytest arguments may follow `--`)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """The unit tests alone (tests/unit): runs anywhere, as any user, in seconds."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def plan(session: nox.Session) -> None:
    """Print the plan: `nox -s plan -- --mode nightly --format json`."""
    session.install("-e", ".")
    session.run("python", "-m", "pipeline", "plan", *session.posargs)


@nox.session
def pipeline(session: nox.Session) -> None:
    """The main job: lab up, then plan, build, convert, test and publish to the lab registry.

    Arguments go to `pipeline run` (default: `--mode main --select DEFAULT_SELECT`).
    """
    session.install("-e", ".")
    session.run("python", "-m", "pipeline", "lab", "up")
    args = list(session.posargs) or ["--mode", "main", "--select", DEFAULT_SELECT]
    session.run("python", "-m", "pipeline", "run", *args)


@nox.session
def lab(session: nox.Session) -> None:
    """The local lab: `nox -s lab -- up`, `-- status` (default), `-- down`."""
    session.install("-e", ".")
    session.run("python", "-m", "pipeline", "lab", *(session.posargs or ["status"]))


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark; each prints its own figures."""
    session.install("-e", ".")
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
