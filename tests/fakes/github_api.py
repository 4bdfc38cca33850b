"""An in-process stand-in for the GitHub REST API, enough for the real PyGithub client.

Routes (https://docs.github.com/en/rest), under one repository ``owner/name``:

* ``GET /user``: the token's user (``{"login", "id", "type"}``), or 403 "Resource not
  accessible by integration" with ``user_endpoint=False`` (an Actions token);
* ``GET /repos/{o}/{r}``, ``GET .../commits/{sha}``, ``GET .../issues/{n}``,
  ``GET .../pulls/{n}``;
* ``POST .../statuses/{sha}`` (state, description <= 140, context; 422 otherwise);
* ``GET .../issues/{n}/comments``: paginated (``per_page``, default ``page_size``) with
  ``Link`` headers (next, last); ``POST`` the same path; ``PATCH .../issues/comments/{id}``
  (bodies over 65536 characters: 422);
* ``POST .../check-runs`` and ``PATCH .../check-runs/{id}`` (at most 50 annotations per
  request: 422).

The ``Authorization`` header must be ``token T`` or ``Bearer T`` with the expected token,
else 401 "Bad credentials".  Misbehaviour for tests: ``rate_limit_first`` (the first N
requests answer 403 with GitHub's secondary-rate-limit message and ``retry-after``),
``fail_first`` (the first N answer 502), ``checks_forbidden`` (403 on check-run
creation, as for a token that is not a GitHub App's).  Everything is recorded in
``requests`` (method, path with query, headers, JSON body, status answered).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.fakes.local_server import LocalServer

SECONDARY = ("You have exceeded a secondary rate limit. Please wait a few minutes before "
             "you try again.")
STAMP = "2024-05-01T12:00:00Z"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with its query
    headers: dict
    body: object
    status: int


@dataclass
class FakeGitHub(LocalServer):
    token: str = "ghp_fake-token-0123456789"
    login: str = "factory-bot"
    repository: str = "sjtuhpc/factory"
    user_endpoint: bool = True
    page_size: int = 30
    rate_limit_first: int = 0
    retry_after: str | None = "1"
    fail_first: int = 0
    checks_forbidden: bool = False
    requests: list[Seen] = field(default_factory=list)
    comments: dict[int, list[dict]] = field(default_factory=dict)  # issue -> comments
    statuses: list[dict] = field(default_factory=list)
    check_runs: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.ids = itertools.count(1000)
        handler = type("Handler", (_Handler,), {"api": self})
        self._listen(handler)

    # -- seeding and looking, for tests ---------------------------------------------------
    def add_comment(self, number: int, body: str, login: str | None = None) -> dict:
        with self.lock:
            return self._comment(number, body, login or "someone-else")

    def writes(self) -> list[Seen]:
        return [r for r in self.requests if r.method != "GET"]

    # -- the API -----------------------------------------------------------------------------
    def _comment(self, number: int, body: str, login: str) -> dict:
        comment_id = next(self.ids)
        base = f"{self.url}/repos/{self.repository}"
        comment = {"id": comment_id, "node_id": f"IC_{comment_id}",
                   "url": f"{base}/issues/comments/{comment_id}",
                   "html_url": f"https://github.example/{self.repository}/pull/{number}"
                               f"#issuecomment-{comment_id}",
                   "issue_url": f"{base}/issues/{number}", "body": body,
                   "user": self._user(login), "created_at": STAMP, "updated_at": STAMP}
        self.comments.setdefault(number, []).append(comment)
        return comment

    def _user(self, login: str) -> dict:
        return {"login": login, "id": abs(hash(login)) % 10**6,
                "type": "Bot" if login.endswith("[bot]") else "User"}

    def answer(self, method: str, path: str, query: dict, body) -> tuple[int, dict, object]:
        for verb, pattern, action in ROUTES:
            match = re.fullmatch(pattern.replace("{repo}", re.escape(self.repository)), path)
            if verb == method and match:
                return action(self, match, query, body)
        return 404, {}, {"message": "Not Found"}

    def _me(self, match, query, body) -> tuple[int, dict, object]:
        if not self.user_endpoint:
            return 403, {}, {"message": "Resource not accessible by integration"}
        return 200, {}, self._user(self.login)

    def _repo(self, match, query, body) -> tuple[int, dict, object]:
        owner, name = self.repository.split("/")
        return 200, {}, {"id": 1, "name": name, "full_name": self.repository,
                         "owner": self._user(owner), "url": f"{self.url}{match[0]}"}

    def _commit(self, match, query, body) -> tuple[int, dict, object]:
        return 200, {}, {"sha": match[1], "url": f"{self.url}{match[0]}"}

    def _issue(self, match, query, body) -> tuple[int, dict, object]:
        number = int(match[1])
        return 200, {}, {"id": number, "number": number, "state": "open",
                         "url": f"{self.url}{match[0]}"}

    def _status(self, match, query, body) -> tuple[int, dict, object]:
        sha = match[1]
        if not isinstance(body, dict) or body.get("state") not in ("error", "failure",
                                                                   "pending", "success"):
            return 422, {}, {"message": "Validation Failed"}
        if len(body.get("description") or "") > 140:
            return 422, {}, {"message": "Validation Failed: description is too long"}
        status = {"id": next(self.ids), "sha": sha, "url": f"{self.url}/statuses/{sha}",
                  "state": body["state"], "description": body.get("description"),
                  "target_url": body.get("target_url"), "context": body.get("context"),
                  "created_at": STAMP, "updated_at": STAMP}
        self.statuses.append(status)
        return 201, {}, status

    def _page(self, match, query, body) -> tuple[int, dict, object]:
        path, number = match[0], int(match[1])
        items = self.comments.get(number, [])
        size = int(query.get("per_page", [self.page_size])[0])
        size = min(size, self.page_size)
        page = int(query.get("page", ["1"])[0])
        last = max(1, -(-len(items) // size))
        links = []
        if page < last:
            links.append(f'<{self.url}{path}?page={page + 1}&per_page={size}>; rel="next"')
            links.append(f'<{self.url}{path}?page={last}&per_page={size}>; rel="last"')
        headers = {"Link": ", ".join(links)} if links else {}
        return 200, headers, items[(page - 1) * size:page * size]

    def _create_comment(self, match, query, body) -> tuple[int, dict, object]:
        number = int(match[1])
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or len(text) > 65536:
            return 422, {}, {"message": "Body is too long (maximum is 65536 characters)"}
        return 201, {}, self._comment(number, text, self.login)

    def _edit_comment(self, match, query, body) -> tuple[int, dict, object]:
        comment_id = int(match[1])
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or len(text) > 65536:
            return 422, {}, {"message": "Body is too long (maximum is 65536 characters)"}
        for comment in itertools.chain.from_iterable(self.comments.values()):
            if comment["id"] == comment_id:
                comment["body"] = text
                comment["updated_at"] = "2024-05-01T12:30:00Z"
                return 200, {}, comment
        return 404, {}, {"message": "Not Found"}

    def _check_run(self, match, query, body) -> tuple[int, dict, object]:
        run_id = int(match[1]) if match.lastindex else None
        if run_id is None and self.checks_forbidden:
            return 403, {}, {"message": "You must authenticate via a GitHub App."}
        output = (body.get("output") if isinstance(body, dict) else None) or {}
        if len(output.get("annotations") or []) > 50:
            return 422, {}, {"message": "Validation Failed: at most 50 annotations"}
        if len(output.get("summary") or "") > 65535:
            return 422, {}, {"message": "Validation Failed: summary is too long"}
        if run_id is None:
            run_id = next(self.ids)
            run = {"id": run_id, "url": f"{self.url}/repos/{self.repository}/check-runs/"
                   f"{run_id}", "name": body.get("name"), "head_sha": body.get("head_sha"),
                   "status": body.get("status"), "conclusion": body.get("conclusion"),
                   "output": dict(output), "annotations": list(output.get("annotations") or [])}
            self.check_runs.append(run)
            return 201, {}, run
        run = next((r for r in self.check_runs if r["id"] == run_id), None)
        if run is None:
            return 404, {}, {"message": "Not Found"}
        run["annotations"] += output.get("annotations") or []
        return 200, {}, run


REPO = "/repos/{repo}"
ROUTES = [
    ("GET", "/user", FakeGitHub._me),
    ("GET", REPO, FakeGitHub._repo),
    ("GET", REPO + r"/commits/([0-9a-f]+)", FakeGitHub._commit),
    ("POST", REPO + r"/statuses/([0-9a-f]+)", FakeGitHub._status),
    ("GET", REPO + r"/(?:issues|pulls)/(\d+)", FakeGitHub._issue),
    ("GET", REPO + r"/issues/(\d+)/comments", FakeGitHub._page),
    ("POST", REPO + r"/issues/(\d+)/comments", FakeGitHub._create_comment),
    ("PATCH", REPO + r"/issues/comments/(\d+)", FakeGitHub._edit_comment),
    ("POST", REPO + "/check-runs", FakeGitHub._check_run),
    ("PATCH", REPO + r"/check-runs/(\d+)", FakeGitHub._check_run),
]


class _Handler(BaseHTTPRequestHandler):
    api: FakeGitHub
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each small answer waits for a delayed ACK

    def log_message(self, *args) -> None:  # quiet
        pass

    def _serve(self) -> None:
        api = self.api
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with api.lock:
            count = len(api.requests) + 1
            headers: dict = {}
            if count <= api.rate_limit_first:
                status, payload = 403, {"message": SECONDARY}
                if api.retry_after is not None:
                    headers["retry-after"] = api.retry_after
            elif count <= api.rate_limit_first + api.fail_first:
                status, payload = 502, {"message": "Server Error"}
            elif self.headers.get("Authorization") not in (f"token {api.token}",
                                                           f"Bearer {api.token}"):
                status, payload = 401, {"message": "Bad credentials"}
            else:
                status, headers, payload = api.answer(self.command, split.path,
                                                      parse_qs(split.query), body)
            api.requests.append(Seen(self.command, self.path, dict(self.headers), body,
                                     status))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve
