"""Input problems: what is wrong, where (file and line), and what to do about it.

Bad input must never end in a traceback.  Code that checks input collects every problem it
can find into a :class:`Problems` list and raises :class:`InputError` once, so that a user
fixing ``matrix.yaml`` sees all of its mistakes in one run.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, printed as ``FILE:LINE: message``."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class InputError(Exception):
    """Raised with every problem found; the command line prints them and exits 2."""

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
