"""Sessions: the README's two commands and their helpers.

    nox -s pipeline   the main job (on the local lab by default)
    nox -s tests      the test suite
    nox -s plan       print the build plan (arguments go to `python -m pipeline plan`)
    nox -s bench      the benchmarks under benchmarks/, each printing its figures
"""

from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest arguments may follow `--`)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def plan(session: nox.Session) -> None:
    """Print the plan: `nox -s plan -- --mode nightly --format json`."""
    session.install("-e", ".")
    session.run("python", "-m", "pipeline", "plan", *session.posargs)


@nox.session
def pipeline(session: nox.Session) -> None:
    """The main job.  Until the build stage exists it plans only, and says so."""
    session.install("-e", ".")
    session.run("python", "-m", "pipeline", "plan", *session.posargs)
    session.log("only the plan stage exists so far: nothing was built or pushed")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark; each prints its own figures."""
    session.install("-e", ".")
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
