"""The factory's failure classes and their exit codes, and input problems.

One exception class per way a command can end badly, each with its ``exit_code``
(the command line returns it; cibuildwheel's convention):

    0         every job passed (run); the plan was printed (plan)
    1         a job or a publication failed (run); the lab is not ready (lab status)
    2         InputError: bad input, every problem printed as FILE:LINE: message
    3         FactoryBroke: the factory itself broke (an unexpected exception outside any
              one job); the traceback goes to a log file, the console gets one line
    4         InfrastructureUnreachable: the Docker daemon, the lab registry or
              Apptainer is not there
    130, 143  Interrupted: SIGINT (Ctrl-C) or SIGTERM stopped the run

Bad input must never end in a traceback.  Code that checks input collects every problem it
can find into a :class:`Problems` list and raises :class:`InputError` once, so that a user
fixing ``matrix.yaml`` sees all of its mistakes in one run.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

EXIT_PASSED = 0
EXIT_JOB_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_FACTORY_BROKE = 3
EXIT_INFRASTRUCTURE = 4


class FactoryError(Exception):
    """A failure of a whole command, not of one job; ``exit_code`` is what the command
    returns."""

    exit_code = EXIT_FACTORY_BROKE
    status = "factory error"


class FactoryBroke(FactoryError):
    """An unexpected exception outside any one job: a bug, or an outside error nobody
    foresaw.  ``log`` is the file that holds its traceback."""

    exit_code = EXIT_FACTORY_BROKE
    status = "factory error"

    def __init__(self, message: str, log: str | None = None):
        super().__init__(message)
        self.log = log


class InfrastructureUnreachable(FactoryError):
    """What every job needs is not there: the Docker daemon does not answer, the lab
    registry does not answer, or there is no Apptainer runtime."""

    exit_code = EXIT_INFRASTRUCTURE
    status = "infrastructure unreachable"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the command; exit code 128 + the signal's number.

    A KeyboardInterrupt, so that no ``except Exception`` meant for one job or one tag
    swallows it."""

    status = "interrupted"

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, printed as ``FILE:LINE: message``."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class InputError(FactoryError):
    """Raised with every problem found; the command line prints them and exits 2."""

    exit_code = EXIT_BAD_INPUT
    status = "bad input"

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class Problems:
    """A collector of problems for one file."""

    file: str
    items: list[Problem] = field(default_factory=list)

    def add(self, line: int | None, message: str) -> None:
        self.items.append(Problem(self.file, line, message))

    def extend(self, other: Problems | list[Problem]) -> None:
        self.items.extend(other.items if isinstance(other, Problems) else other)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise InputError(list(self.items))
