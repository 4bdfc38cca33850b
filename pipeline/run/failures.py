"""Which failure class an exception belongs to, and the log of one that broke the factory.

The tools raise their own exceptions; this is where they are mapped, by type, to the
command's failure classes (``pipeline.errors``):

* ``DockerUnavailable``, ``ApptainerMissing``, and a ``RegistryError`` that gave up after
  retries or could not connect -> :class:`InfrastructureUnreachable` (exit 4);
* ``InputError`` (2), ``Interrupted`` (130/143) and other ``FactoryError``\\ s stay as they are;
* anything else is unexpected -> :class:`FactoryBroke` (exit 3), its traceback written to a
  log file (masked) and named in one plain line.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import FactoryBroke, FactoryError, InfrastructureUnreachable, Interrupted
from pipeline.tools.apptainer import ApptainerMissing
from pipeline.tools.docker_engine import DockerUnavailable
from pipeline.tools.registry.client import RegistryAuthError, RegistryError

INFRASTRUCTURE = (DockerUnavailable, ApptainerMissing)
ERROR_LOG = "factory-error.log"
_UNREACHABLE = ("gave up after retries", "connection failed", "connection refused",
                "does not answer", "not reachable")


def unreachable_registry(err: BaseException) -> bool:
    """A RegistryError that says the registry could not be reached (not a refusal)."""
    if not isinstance(err, RegistryError) or isinstance(err, RegistryAuthError):
        return False
    text = str(err).lower()
    return any(words in text for words in _UNREACHABLE)


def known(err: BaseException) -> FactoryError | Interrupted | None:
    """The failure class ``err`` belongs to, or None when it is unexpected."""
    if isinstance(err, (FactoryError, Interrupted)):
        return err
    if isinstance(err, KeyboardInterrupt):
        return Interrupted(signal.SIGINT)
    if isinstance(err, INFRASTRUCTURE) or unreachable_registry(err):
        return InfrastructureUnreachable(str(err))
    return None


def first_line(text: str, limit: int = 300) -> str:
    line = next((part for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def write_error_log(err: BaseException, path: Path, mask: Callable[[str], str]) -> Path:
    """Write ``err``'s traceback (masked) to ``path``; to the temporary folder when that
    cannot be written.  Returns where it went."""
    text = (f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(sys.argv)}\n"
            + "".join(traceback.format_exception(type(err), err, err.__traceback__)))
    for where in (path, Path(tempfile.gettempdir()) / ERROR_LOG):
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            with open(where, "a", encoding="utf-8") as handle:
                handle.write(mask(text) + "\n")
            return where
        except OSError:
            continue
    return path


def broke(err: BaseException, log: Path, mask: Callable[[str], str]) -> FactoryBroke:
    """``err`` as a FactoryBroke, its traceback written to ``log``."""
    where = write_error_log(err, log, mask)
    message = first_line(f"{type(err).__name__}: {err}")
    return FactoryBroke(mask(f"the factory itself broke ({message}); the traceback is in "
                             f"{where}"), str(where))


def classify(err: BaseException, log: Path, mask: Callable[[str], str]
             ) -> FactoryError | Interrupted:
    """The failure class of ``err``; an unexpected one has its traceback written to ``log``."""
    return known(err) or broke(err, log, mask)
