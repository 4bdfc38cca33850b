"""Retrying registry operations: what is worth another try, and how long to wait.

A registry (or its token service) that answers 429 or 5xx, or drops the connection, is
asked again with exponential backoff, or after what its ``Retry-After`` says, bounded in
attempts and in total time (``RetryPolicy``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tenacity import wait_exponential


class Transient(RuntimeError):
    """A failure worth retrying; ``retry_after`` is what the registry asked to wait."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    total_seconds: float = 300.0
    max_backoff: float = 30.0
    max_retry_after: float = 60.0


# The lab's own registry: a few retries, a minute at most, then "is it up?".
LAB_RETRIES = RetryPolicy(attempts=6, total_seconds=60)


class WaitOrRetryAfter:
    """Exponential backoff, or the registry's ``Retry-After`` when it sent one."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.backoff = wait_exponential(multiplier=0.5, max=policy.max_backoff)

    def __call__(self, state) -> float:
        err = state.outcome.exception()
        if isinstance(err, Transient) and err.retry_after is not None:
            return min(err.retry_after, self.policy.max_retry_after)
        return self.backoff(state)


def retry_after(headers) -> float | None:
    """Seconds from a ``Retry-After`` header; None when absent or an HTTP date (then the
    backoff decides)."""
    value = (headers or {}).get("Retry-After", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
