"""Asking a forge's API again: what is worth another try, how long to wait, when to stop.

Neither client retries on its own (PyGithub gets ``retry=None``; python-gitlab is told
never to obey 429s or retry transient errors itself, see ``gitlab_reporter``), so that one
policy, bounded and testable, covers both forges, and so that a unit of work is retried
whole: the sticky comment is looked for again before it is created, so a POST whose answer
was lost after the forge made the comment does not make a second one.

Worth another try (:attr:`Failure.transient`): no answer (connection refused or reset, a
timeout), 429, 5xx, and GitHub's 403 rate limits (a ``Retry-After`` header, a message about
a rate limit, or ``x-ratelimit-remaining: 0``).  The wait is the forge's ``Retry-After``;
for a rate limit without one, until ``x-ratelimit-reset`` or else ``rate_limit_wait``
seconds (GitHub asks for at least a minute); otherwise ``backoff`` seconds, doubled after
each try, at most 30.  A unit is tried at most ``attempts`` times, and no wait may end more
than ``budget`` seconds after its first try: then it fails as :class:`Unreachable` (the
command exits 4).  Any other 4xx is :class:`Refused` at once, never retried.

Settings, from the environment (the tests make them tiny):

    PIPELINE_FORGE_ATTEMPTS         tries per unit of work (default 5)
    PIPELINE_FORGE_RETRY_SECONDS    a unit gives up rather than wait past this (default 180)
    PIPELINE_FORGE_BACKOFF          the first wait after a 5xx or no answer (default 2)
    PIPELINE_FORGE_RATE_LIMIT_WAIT  the wait for a rate limit without Retry-After (default 60)
    PIPELINE_FORGE_WRITE_INTERVAL   seconds between two writes, GitHub's advice (default 1)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import Retrying, retry_if_exception

from pipeline.errors import InputError, Problem

T = TypeVar("T")
MAX_BACKOFF = 30.0
MESSAGE_CHARS = 200
UNAUTHORIZED, TOO_MANY_REQUESTS, SERVER_ERRORS = 401, 429, 500
SETTINGS = {"attempts": "PIPELINE_FORGE_ATTEMPTS", "budget": "PIPELINE_FORGE_RETRY_SECONDS",
            "backoff": "PIPELINE_FORGE_BACKOFF",
            "rate_limit_wait": "PIPELINE_FORGE_RATE_LIMIT_WAIT",
            "write_interval": "PIPELINE_FORGE_WRITE_INTERVAL"}


@dataclass(frozen=True)
class Pacing:
    attempts: int = 5
    budget: float = 180.0
    backoff: float = 2.0
    rate_limit_wait: float = 60.0
    write_interval: float = 1.0
    timeout: int = 30  # seconds for one request to answer

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Pacing:
        values: dict = {}
        problems = []
        for name, variable in SETTINGS.items():
            text = env.get(variable, "").strip()
            if not text:
                continue
            try:
                value = int(text) if name == "attempts" else float(text)
            except ValueError:
                value = -1
            if value < (1 if name == "attempts" else 0):
                problems.append(Problem(variable, None, f"'{text}' is not a "
                                        + ("whole number of at least 1" if name == "attempts"
                                           else "number of seconds (0 or more)")))
            values[name] = value
        if problems:
            raise InputError(problems)
        return cls(**values)


@dataclass(frozen=True)
class Failure:
    """An API error, classified: ``status`` (None: no answer), a one-line ``message``,
    whether it is worth another try, and the wait the forge asked for."""

    status: int | None
    message: str
    transient: bool
    wait: float | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.message}" if self.status else self.message


class Refused(Exception):
    """The forge answered a 4xx that another try would not change."""

    def __init__(self, what: str, failure: Failure):
        super().__init__(f"{what}: {failure}")
        self.failure = failure


class Unreachable(Exception):
    """No answer, 5xx or rate limits, still, after the tries and waits allowed."""


def transient_status(status: int) -> bool:
    """429 and 5xx: worth another try (GitHub's 403 rate limits are told by their body)."""
    return status == TOO_MANY_REQUESTS or status >= SERVER_ERRORS


def one_line(text, status: int | None) -> str:
    """An API error's message: its first non-blank line, cut at MESSAGE_CHARS."""
    text = str(text or "").strip() or f"HTTP {status}"
    line = next((part for part in text.splitlines() if part.strip()), text).strip()
    return line if len(line) <= MESSAGE_CHARS else line[:MESSAGE_CHARS - 3] + "..."


def seconds(headers: Mapping[str, str], name: str = "retry-after") -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date); None without one."""
    value = next((v for k, v in headers.items() if k.lower() == name), None)
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def rate_limit_wait(headers: Mapping[str, str], pacing: Pacing) -> float:
    """How long a rate limit without Retry-After asks to wait."""
    lowered = {k.lower(): str(v) for k, v in headers.items()}
    reset = lowered.get("x-ratelimit-reset", "")
    if lowered.get("x-ratelimit-remaining") == "0" and reset.isdigit():
        return max(0.0, int(reset) - time.time() + 1)
    return pacing.rate_limit_wait


def call(action: Callable[[], T], classify: Callable[[BaseException], Failure | None], *,
         pacing: Pacing, what: str, notice: Callable[[str], None],
         sleep: Callable[[float], None] = time.sleep) -> T:
    """``action()``, tried again while ``classify`` calls its error transient; raises
    Unreachable or Refused (an error ``classify`` does not know goes up as it is)."""

    def wait(state) -> float:
        failure = classify(state.outcome.exception())
        if failure is not None and failure.wait is not None:
            return failure.wait
        return min(pacing.backoff * 2 ** (state.attempt_number - 1), MAX_BACKOFF)

    def stop(state) -> bool:
        return (state.attempt_number >= pacing.attempts
                or state.seconds_since_start + wait(state) > pacing.budget)

    def before_sleep(state) -> None:
        failure = classify(state.outcome.exception())
        notice(f"{what}: {failure}; trying again in {wait(state):.0f} s "
               f"(try {state.attempt_number + 1} of {pacing.attempts})")

    tries = [0]

    def counted() -> T:
        tries[0] += 1
        return action()

    retrying = Retrying(retry=retry_if_exception(lambda e: _transient(classify(e))),
                        wait=wait, stop=stop, reraise=True, sleep=sleep,
                        before_sleep=before_sleep)
    try:
        return retrying(counted)
    except Exception as err:
        failure = classify(err)
        if failure is None:
            raise
        if failure.transient:
            waited = "" if failure.wait is None or failure.wait <= pacing.budget else (
                f" (it asked to wait {failure.wait:.0f} s, over the {pacing.budget:.0f} s "
                "allowed)")
            raise Unreachable(f"{what}: {failure}{waited}; gave up after {tries[0]} "
                              f"tr{'y' if tries[0] == 1 else 'ies'}") from err
        raise Refused(what, failure) from err


def _transient(failure: Failure | None) -> bool:
    return failure is not None and failure.transient
