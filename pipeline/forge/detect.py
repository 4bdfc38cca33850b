"""Which forge a report goes to, from the CI environment: a frozen :class:`ForgeContext`.

GitHub Actions (``GITHUB_ACTIONS=true``): ``GITHUB_REPOSITORY``, ``GITHUB_API_URL``,
``GITHUB_SERVER_URL``, ``GITHUB_RUN_ID``, ``GITHUB_SHA``, ``GITHUB_EVENT_NAME``,
``GITHUB_EVENT_PATH``; the token is ``GITHUB_TOKEN``.  From the event's JSON:

* ``pull_request`` / ``pull_request_target``: the number is ``pull_request.number`` and the
  commit ``pull_request.head.sha`` (``GITHUB_SHA`` is the merge commit there, which nobody
  looks at).  A ``pull_request`` event whose head repository is not the base repository
  (a fork) gets a read-only token: nothing is posted.
* ``workflow_run`` (the reporter a fork's run triggers, which may write): the number is
  ``workflow_run.pull_requests[0].number`` and the commit ``workflow_run.head_sha``.  GitHub
  leaves ``pull_requests`` empty for a fork's pull request: pass ``--pr`` (e.g. from an
  artifact the fork's run uploaded).

GitLab CI (``GITLAB_CI=true``): ``CI_API_V4_URL``, ``CI_SERVER_URL``, ``CI_PROJECT_ID``,
``CI_COMMIT_SHA``, ``CI_MERGE_REQUEST_IID``, ``CI_MERGE_REQUEST_PROJECT_ID``,
``CI_PIPELINE_URL``; the token is ``PIPELINE_GITLAB_TOKEN``, a project access token with
the ``api`` scope (``CI_JOB_TOKEN`` may not write notes or statuses).  A pipeline that runs
in a fork for a merge request into another project is read-only.

``--pr``, ``--sha`` and ``--read-only`` override what the environment says.  No forge
detected: ``detect`` returns None and only the local files are written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.errors import InputError, Problem

GITHUB_TOKEN = "GITHUB_TOKEN"
GITLAB_TOKEN = "PIPELINE_GITLAB_TOKEN"
TOKEN_VARIABLES = (GITHUB_TOKEN, GITLAB_TOKEN)


@dataclass(frozen=True)
class ForgeContext:
    forge: str  # "github" or "gitlab"
    api_url: str  # https://api.github.com, https://gitlab.example/api/v4
    server_url: str  # the web pages' root: links to it are trusted in the report
    project: str  # owner/name on GitHub, the project id on GitLab
    sha: str | None = None  # the commit the status (and check run) is about
    number: int | None = None  # the pull request's number, the merge request's iid
    run_url: str | None = None  # the CI run or pipeline page
    token: str | None = field(default=None, repr=False)
    read_only: str | None = None  # why nothing may be posted, or None
    note_project: str | None = None  # GitLab: the project holding the merge request

    def why_not_post(self) -> str | None:
        """None when the report can be posted, else a plain sentence why not."""
        if self.read_only:
            return f"read-only: {self.read_only}"
        if not self.token:
            variable = GITHUB_TOKEN if self.forge == "github" else GITLAB_TOKEN
            return f"no token: set {variable} to post on {self.forge}"
        if not self.project:
            return "the CI environment names no repository or project"
        if not self.sha and self.number is None:
            return "neither a commit (--sha) nor a pull request (--pr) to report on"
        return None


def detect(env: Mapping[str, str], *, pr: int | None = None, sha: str | None = None,
           read_only: bool = False) -> ForgeContext | None:
    """The forge of this CI environment, or None outside GitHub Actions and GitLab CI."""
    if env.get("GITHUB_ACTIONS") == "true":
        context = _github(env)
    elif env.get("GITLAB_CI") == "true":
        context = _gitlab(env)
    else:
        return None
    changes: dict = {}
    if pr is not None:
        changes["number"] = pr
    if sha:
        changes["sha"] = sha
    if read_only:
        changes["read_only"] = "--read-only was given"
    return replace(context, **changes)


def _github(env: Mapping[str, str]) -> ForgeContext:
    repository = env.get("GITHUB_REPOSITORY", "")
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    run_id = env.get("GITHUB_RUN_ID")
    event = _event(env.get("GITHUB_EVENT_PATH"))
    name = env.get("GITHUB_EVENT_NAME", "")
    number, sha, read_only = None, env.get("GITHUB_SHA") or None, None
    pull = event.get("pull_request")
    run = event.get("workflow_run")
    if isinstance(pull, dict):
        number = _int(pull.get("number"))
        sha = _text(_get(pull, "head", "sha")) or sha
        head = _text(_get(pull, "head", "repo", "full_name"))
        base = _text(_get(pull, "base", "repo", "full_name")) or repository
        if name in ("pull_request", "") and head != base:
            read_only = (f"a pull request from the fork {head or '(deleted)'}: its token may "
                         "not write; the workflow_run reporter posts for it")
    elif isinstance(run, dict):
        pulls = run.get("pull_requests")
        if isinstance(pulls, list) and pulls and isinstance(pulls[0], dict):
            number = _int(pulls[0].get("number"))
        sha = _text(run.get("head_sha")) or sha
    return ForgeContext(
        forge="github", api_url=env.get("GITHUB_API_URL", "https://api.github.com"),
        server_url=server, project=repository, sha=sha, number=number,
        run_url=f"{server}/{repository}/actions/runs/{run_id}" if run_id and repository
        else None,
        token=env.get(GITHUB_TOKEN) or None, read_only=read_only)


def _gitlab(env: Mapping[str, str]) -> ForgeContext:
    project = env.get("CI_PROJECT_ID", "")
    note_project = env.get("CI_MERGE_REQUEST_PROJECT_ID") or project
    server = env.get("CI_SERVER_URL", "").rstrip("/")
    read_only = None
    if env.get("CI_MERGE_REQUEST_IID") and note_project != project:
        read_only = (f"a pipeline in the fork (project {project}) for a merge request into "
                     f"project {note_project}")
    return ForgeContext(
        forge="gitlab", api_url=env.get("CI_API_V4_URL") or f"{server}/api/v4",
        server_url=server, project=project, sha=env.get("CI_COMMIT_SHA") or None,
        number=_int(env.get("CI_MERGE_REQUEST_IID")), run_url=env.get("CI_PIPELINE_URL"),
        token=env.get(GITLAB_TOKEN) or None, read_only=read_only, note_project=note_project)


def _event(path: str | None) -> dict:
    """The event's JSON; {} without one.  An unreadable event is bad input."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise InputError([Problem(path, None, f"GITHUB_EVENT_PATH cannot be read: "
                                  f"{err.strerror}")]) from None
    except ValueError as err:
        raise InputError([Problem(path, getattr(err, "lineno", None),
                                  f"the event is not JSON: {err}")]) from None
    return data if isinstance(data, dict) else {}


def _get(data, *keys):
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
