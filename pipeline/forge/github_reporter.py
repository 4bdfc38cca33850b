"""The report on GitHub, with PyGithub: a commit status, one sticky comment, a check run.

* The commit status ``factory`` on the commit (the pull request's head): ``success``,
  ``failure``, ``error`` (the factory or the infrastructure broke, or the run was
  interrupted) or ``pending``; its link is the run's page, its description the counts.
* One comment on the pull request, found again by the hidden marker and edited in place;
  created only when there is none.  A comment is ours only when its body *starts* with
  the marker *and* its author is the token's user: ``GET /user`` gives it for a personal or
  bot account's token; an Actions ``GITHUB_TOKEN`` may not read ``/user`` (403), and its
  comments are by ``github-actions[bot]``.  A comment that quotes the marker, or someone
  else's comment that starts with it, is left alone.
* A check run ``factory`` (``completed``, with the counts as title, the Markdown as summary
  and one ``failure`` annotation per failed job, 50 per request, on ``matrix.yaml``).  Only
  a GitHub App's token (``GITHUB_TOKEN`` with ``checks: write``) may create one; a 403 only
  skips this part.

PyGithub (2.9 or later) runs lazy, so that only the requests above are sent, and with
``retry=None``: ``retries`` retries each part whole.  Writes are spaced by
``PIPELINE_FORGE_WRITE_INTERVAL`` (GitHub asks for a second between them).
"""

from __future__ import annotations

from collections.abc import Callable

import requests
from github import Auth, Github, GithubException

from pipeline.forge.comment import MARKER
from pipeline.forge.detect import ForgeContext
from pipeline.forge.posting import Posted, Report, Unit, post_parts
from pipeline.forge.retries import (
    Failure,
    Pacing,
    one_line,
    rate_limit_wait,
    seconds,
    transient_status,
)

CONTEXT = "factory"
ACTIONS_BOT = "github-actions[bot]"
ANNOTATION_PATH = "matrix.yaml"  # summary.json does not name a job's recipe file
ANNOTATIONS_PER_REQUEST = 50
STATES = {"passed": "success", "failed": "failure", "error": "error", "interrupted": "error",
          "pending": "pending"}
CONCLUSIONS = {"passed": "success", "failed": "failure", "error": "failure",
               "interrupted": "cancelled"}


class GitHubReporter:
    def __init__(self, context: ForgeContext, pacing: Pacing, notice: Callable[[str], None]):
        self.context = context
        self.pacing = pacing
        self.notice = notice
        self.github = Github(auth=Auth.Token(context.token or ""), base_url=context.api_url,
                             retry=None, timeout=pacing.timeout, per_page=100, lazy=True,
                             seconds_between_requests=pacing.write_interval / 4 or None,
                             seconds_between_writes=pacing.write_interval or None)
        self.repo = self.github.get_repo(context.project)  # lazy: no request
        self._login: str | None = None
        self._check_run = None
        self._annotated = 0  # of the annotations past the first request's

    def post(self, report: Report) -> list[Posted]:
        units = []
        if self.context.sha:
            units.append(Unit("commit status", lambda: self._status(report)))
        if self.context.number is not None:
            units.append(Unit("comment", lambda: self._comment(report)))
        if self.context.sha:
            units.append(Unit("check run", lambda: self._check(report),
                              skip={403: "this token may not create check runs"}))
            if len(report.failures) > ANNOTATIONS_PER_REQUEST:
                units.append(Unit("check run annotations", lambda: self._annotations(report)))
        try:
            return post_parts(units, self.classify, pacing=self.pacing, notice=self.notice)
        finally:
            self.github.close()

    def classify(self, err: BaseException) -> Failure | None:
        if isinstance(err, GithubException):
            headers = {str(k).lower(): str(v) for k, v in (err.headers or {}).items()}
            message = _message(err)
            after = seconds(headers)
            limited = err.status in (403, 429) and (
                after is not None or "rate limit" in message.lower()
                or headers.get("x-ratelimit-remaining") == "0")
            if limited:
                return Failure(err.status, message, True,
                               after if after is not None else rate_limit_wait(headers,
                                                                                self.pacing))
            return Failure(err.status, message, transient_status(err.status), after)
        if isinstance(err, requests.RequestException):
            return Failure(None, f"no answer from {self.context.api_url} "
                           f"({type(err).__name__})", True)
        return None

    # -- the parts -------------------------------------------------------------------------
    def _status(self, report: Report) -> Posted:
        sha = self.context.sha or ""
        state = STATES.get(report.state, "error")
        extra = {"target_url": self.context.run_url} if self.context.run_url else {}
        self.repo.get_commit(sha).create_status(state=state, description=report.description,
                                                context=CONTEXT, **extra)
        return Posted("commit status", "posted", f"{CONTEXT}={state} on {sha[:12]}")

    def _comment(self, report: Report) -> Posted:
        issue = self.repo.get_issue(self.context.number or 0)
        login = self._our_login()
        ours = next((c for c in issue.get_comments() if _is_ours(c, login)), None)
        if ours is None:
            made = issue.create_comment(report.markdown)
            return Posted("comment", "created", made.html_url or f"#{made.id}")
        if ours.body == report.markdown:
            return Posted("comment", "unchanged", ours.html_url or f"#{ours.id}")
        ours.edit(report.markdown)
        return Posted("comment", "edited", ours.html_url or f"#{ours.id}")

    def _our_login(self) -> str:
        """The token's user; github-actions[bot] for a token that may not read /user."""
        if self._login is None:
            try:
                self._login = self.github.get_user().login
            except GithubException as err:
                failure = self.classify(err)
                if failure is None or failure.transient or err.status not in (403, 404):
                    raise
                self._login = ACTIONS_BOT
        return self._login

    def _check(self, report: Report) -> Posted:
        extra: dict = {"details_url": self.context.run_url} if self.context.run_url else {}
        if report.state in CONCLUSIONS:
            extra.update(status="completed", conclusion=CONCLUSIONS[report.state])
        else:
            extra.update(status="in_progress")
        annotations = _annotations(report.failures[:ANNOTATIONS_PER_REQUEST])
        self._check_run = self.repo.create_check_run(
            name=CONTEXT, head_sha=self.context.sha or "",
            output={"title": report.title, "summary": report.markdown,
                    "annotations": annotations}, **extra)
        return Posted("check run", "created", f"{CONTEXT}: {extra.get('conclusion', 'in progress')}"
                      f", {len(report.failures)} annotation(s)")

    def _annotations(self, report: Report) -> Posted:
        if self._check_run is None:
            return Posted("check run annotations", "skipped", "no check run")
        rest = report.failures[ANNOTATIONS_PER_REQUEST:]
        # GitHub adds each request's annotations to the run's: a retry goes on from the
        # first batch not yet accepted.
        while self._annotated < len(rest):
            batch = rest[self._annotated:self._annotated + ANNOTATIONS_PER_REQUEST]
            self._check_run.edit(output={"title": report.title, "summary": report.markdown,
                                         "annotations": _annotations(batch)})
            self._annotated += len(batch)
        return Posted("check run annotations", "posted", f"{len(rest)} more")


def _is_ours(comment, login: str) -> bool:
    user = comment.user
    return bool(comment.body and comment.body.startswith(MARKER) and user is not None
                and user.login == login)


def _annotations(failures) -> list[dict]:
    return [{"path": ANNOTATION_PATH, "start_line": 1, "end_line": 1,
             "annotation_level": "failure", "title": job_id[:255],
             "message": (reason or "failed")[:4000]} for job_id, reason in failures]


def _message(err: GithubException) -> str:
    data = err.data
    return one_line(data.get("message") if isinstance(data, dict) else data, err.status)
