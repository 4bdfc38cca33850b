"""The report on GitLab, with python-gitlab: a commit status and one sticky MR note.

* The commit status ``factory`` (``POST /projects/:id/statuses/:sha``): ``success``,
  ``failed`` (also when the factory or the infrastructure broke), ``canceled``
  (interrupted) or ``running``; its link is the pipeline's page.
* One note on the merge request, found again by the hidden marker and edited in place
  (``PUT .../notes/:note_id``); created only when there is none.  A note is ours only when
  its body starts with the marker, it is not a system note, and its author is the token's
  user (``GET /user``: a project access token's bot user).

The token is ``PIPELINE_GITLAB_TOKEN``, a project access token with the ``api`` scope and
at least the Reporter role (``CI_JOB_TOKEN`` may not write notes or statuses).

python-gitlab would sleep on a 429 for as long as ``Retry-After`` says and retry 5xx ten
times by itself; here it does neither (``_Gitlab``), and ``retries`` retries each part
whole, with the ``Retry-After`` of the last answer (kept by a response hook).
"""

from __future__ import annotations

from collections.abc import Callable

import gitlab
import requests
from gitlab.exceptions import GitlabError

from pipeline.forge.comment import MARKER
from pipeline.forge.detect import ForgeContext
from pipeline.forge.posting import Posted, Report, Unit, post_parts
from pipeline.forge.retries import Failure, Pacing, one_line, seconds, transient_status

NAME = "factory"
STATES = {"passed": "success", "failed": "failed", "error": "failed",
          "interrupted": "canceled", "pending": "running"}


class _Gitlab(gitlab.Gitlab):
    """python-gitlab without its own retrying: every answer comes back at once."""

    def http_request(self, *args, **kwargs):
        kwargs["obey_rate_limit"] = False
        kwargs["retry_transient_errors"] = False
        return super().http_request(*args, **kwargs)


class GitLabReporter:
    def __init__(self, context: ForgeContext, pacing: Pacing, notice: Callable[[str], None]):
        self.context = context
        self.pacing = pacing
        self.notice = notice
        self.retry_after: float | None = None
        self.session = requests.Session()
        self.session.hooks["response"].append(self._remember)
        base = context.api_url.rstrip("/")
        base = base[:-len("/api/v4")] if base.endswith("/api/v4") else base
        self.gitlab = _Gitlab(base, private_token=context.token, timeout=pacing.timeout,
                              session=self.session, retry_transient_errors=False)
        self._user_id: int | None = None

    def post(self, report: Report) -> list[Posted]:
        units = []
        if self.context.sha:
            units.append(Unit("commit status", lambda: self._status(report)))
        if self.context.number is not None:
            units.append(Unit("merge request note", lambda: self._note(report)))
        try:
            return post_parts(units, self.classify, pacing=self.pacing, notice=self.notice)
        finally:
            self.session.close()

    def classify(self, err: BaseException) -> Failure | None:
        if isinstance(err, GitlabError) and err.response_code is not None:
            status = err.response_code
            transient = transient_status(status)
            return Failure(status, one_line(err.error_message, status), transient,
                           self.retry_after if transient else None)
        if isinstance(err, requests.RequestException):
            return Failure(None, f"no answer from {self.context.api_url} "
                           f"({type(err).__name__})", True)
        return None

    def _remember(self, response, *args, **kwargs) -> None:
        self.retry_after = seconds(response.headers)

    # -- the parts -------------------------------------------------------------------------
    def _status(self, report: Report) -> Posted:
        sha = self.context.sha or ""
        state = STATES.get(report.state, "failed")
        data = {"state": state, "name": NAME, "description": report.description}
        if self.context.run_url:
            data["target_url"] = self.context.run_url
        project = self.gitlab.projects.get(self.context.project, lazy=True)
        project.commits.get(sha, lazy=True).statuses.create(data)
        return Posted("commit status", "posted", f"{NAME}={state} on {sha[:12]}")

    def _note(self, report: Report) -> Posted:
        project = self.gitlab.projects.get(self.context.note_project or self.context.project,
                                           lazy=True)
        request = project.mergerequests.get(self.context.number, lazy=True)
        me = self._our_user_id()
        ours = next((n for n in request.notes.list(iterator=True, sort="asc",
                                                   order_by="created_at")
                     if _is_ours(n, me)), None)
        if ours is None:
            made = request.notes.create({"body": report.markdown})
            return Posted("merge request note", "created", f"note {made.id}")
        if ours.body == report.markdown:
            return Posted("merge request note", "unchanged", f"note {ours.id}")
        ours.body = report.markdown
        ours.save()
        return Posted("merge request note", "edited", f"note {ours.id}")

    def _our_user_id(self) -> int:
        if self._user_id is None:
            self.gitlab.auth()
            self._user_id = self.gitlab.user.id
        return self._user_id


def _is_ours(note, user_id: int) -> bool:
    body = getattr(note, "body", "") or ""
    author = getattr(note, "author", None) or {}
    return (body.startswith(MARKER) and not getattr(note, "system", False)
            and author.get("id") == user_id)

