"""What a reporter posts (:class:`Report`), what came of each part (:class:`Posted`), and
the loop that posts the parts in turn (:func:`post_parts`).

Each part (the commit status, the comment, the check run) is one unit of work, retried
whole (``retries.call``).  A part the forge refuses (4xx) is reported and the next one is
tried, except after a 401: the token is wrong, so the rest is not tried.  A part that
stays unreachable stops the rest too (each would wait its own budget out); the command then
exits 4.  A part may name statuses that only skip it (``Unit.skip``): a token that may not
create check runs answers 403, which is not a failure of the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.forge.retries import UNAUTHORIZED, Failure, Pacing, Refused, Unreachable, call


@dataclass(frozen=True)
class Report:
    """The report, forge-neutral: the Markdown and what the status and check run say."""

    markdown: str
    state: str  # passed, failed, error, interrupted, pending (summary_parts.View.state)
    description: str  # at most 140 characters
    title: str
    failures: tuple[tuple[str, str], ...] = ()  # (job id, reason) of each failed job


@dataclass(frozen=True)
class Posted:
    part: str  # "commit status", "comment", ...
    outcome: str  # posted, created, edited, unchanged, skipped, refused, unreachable, not tried
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in ("refused", "unreachable", "not tried")

    def __str__(self) -> str:
        return f"{self.part}: {self.outcome}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class Unit:
    what: str
    action: Callable[[], Posted]
    skip: dict[int, str] = field(default_factory=dict)  # status -> why that only skips


def post_parts(units: list[Unit], classify: Callable[[BaseException], Failure | None], *,
               pacing: Pacing, notice: Callable[[str], None]) -> list[Posted]:
    results: list[Posted] = []
    stopped = ""
    for unit in units:
        if stopped:
            results.append(Posted(unit.what, "not tried", stopped))
            continue
        try:
            results.append(call(unit.action, classify, pacing=pacing, what=unit.what,
                                notice=notice))
        except Refused as err:
            status = err.failure.status
            if status in unit.skip:
                results.append(Posted(unit.what, "skipped", f"{unit.skip[status]} ({err.failure})"))
                continue
            results.append(Posted(unit.what, "refused", str(err.failure)))
            if status == UNAUTHORIZED:
                stopped = "the token was refused (401)"
        except Unreachable as err:
            results.append(Posted(unit.what, "unreachable", str(err).split(": ", 1)[-1]))
            stopped = f"the API did not answer for the {unit.what}"
    return results
