"""An in-process stand-in for the GitLab REST API v4, enough for the real python-gitlab.

Routes (https://docs.gitlab.com/ee/api/), under ``/api/v4``:

* ``GET /user``: the token's user (a project access token's bot);
* ``GET /projects/{id}``, ``GET /projects/{id}/merge_requests/{iid}``;
* ``POST /projects/{id}/statuses/{sha}`` (``state`` one of pending, running, success,
  failed, canceled, skipped; 400 otherwise);
* ``GET /projects/{id}/merge_requests/{iid}/notes``: paginated (``per_page``, default
  ``page_size``) with ``Link`` and ``X-Page``/``X-Next-Page``/``X-Total`` headers;
  ``POST`` the same path; ``PUT .../notes/{note_id}``.

The ``PRIVATE-TOKEN`` header must be the expected token, else 401.  Misbehaviour:
``rate_limit_first`` (429 with ``Retry-After``), ``fail_first`` (502).  Every request is
recorded in ``requests`` (method, path with query, headers, JSON body, status answered).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.github_api import Seen
from tests.fakes.local_server import LocalServer

STATES = ("pending", "running", "success", "failed", "canceled", "skipped")
STAMP = "2024-05-01T12:00:00.000Z"


@dataclass
class FakeGitLab(LocalServer):
    token: str = "glpat-fake-token-0123456789"
    project_id: int = 7
    user_id: int = 4242
    username: str = "project_7_bot"
    page_size: int = 20
    rate_limit_first: int = 0
    retry_after: str = "0"
    fail_first: int = 0
    requests: list[Seen] = field(default_factory=list)
    notes: dict[int, list[dict]] = field(default_factory=dict)  # MR iid -> notes
    statuses: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.ids = itertools.count(500)
        handler = type("Handler", (_Handler,), {"api": self})
        self._listen(handler)
        self.api_url = f"{self.url}/api/v4"

    def add_note(self, iid: int, body: str, user_id: int = 1, *, system: bool = False
                 ) -> dict:
        with self.lock:
            return self._note(iid, body, user_id, system=system)

    def writes(self) -> list[Seen]:
        return [r for r in self.requests if r.method != "GET"]

    def _note(self, iid: int, body: str, user_id: int, *, system: bool = False) -> dict:
        note = {"id": next(self.ids), "body": body, "system": system,
                "author": {"id": user_id, "username": f"user{user_id}"},
                "noteable_type": "MergeRequest", "noteable_iid": iid,
                "created_at": STAMP, "updated_at": STAMP}
        self.notes.setdefault(iid, []).append(note)
        return note

    def answer(self, method: str, path: str, query: dict, body) -> tuple[int, dict, object]:
        project = re.match(r"/api/v4/projects/([^/]+)", path)
        if project and unquote(project[1]) != str(self.project_id):
            return 404, {}, {"message": "404 Project Not Found"}
        for verb, pattern, action in ROUTES:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                return action(self, match, query, body)
        return 404, {}, {"message": "404 Not Found"}

    def _me(self, match, query, body) -> tuple[int, dict, object]:
        return 200, {}, {"id": self.user_id, "username": self.username, "bot": True}

    def _project(self, match, query, body) -> tuple[int, dict, object]:
        return 200, {}, {"id": self.project_id, "path_with_namespace": "sjtuhpc/factory"}

    def _merge_request(self, match, query, body) -> tuple[int, dict, object]:
        return 200, {}, {"id": 1, "iid": int(match[1]), "project_id": self.project_id,
                         "state": "opened"}

    def _create_note(self, match, query, body) -> tuple[int, dict, object]:
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return 400, {}, {"message": "400 Bad request - body is missing"}
        return 201, {}, self._note(int(match[1]), text, self.user_id)

    def _status(self, match, query, body) -> tuple[int, dict, object]:
        sha = match[1]
        state = body.get("state") if isinstance(body, dict) else None
        if state not in STATES:
            return 400, {}, {"message": "400 Bad request - state does not have a valid value"}
        status = {"id": next(self.ids), "sha": sha, "status": state,
                  "name": body.get("name", "default"), "target_url": body.get("target_url"),
                  "description": body.get("description"), "created_at": STAMP}
        self.statuses.append(status)
        return 201, {}, status

    def _page(self, match, query, body) -> tuple[int, dict, object]:
        path, iid = match[0], int(match[1])
        items = self.notes.get(iid, [])
        size = min(int(query.get("per_page", [self.page_size])[0]), self.page_size)
        page = int(query.get("page", ["1"])[0])
        last = max(1, -(-len(items) // size))
        headers = {"X-Page": str(page), "X-Per-Page": str(size), "X-Total": str(len(items)),
                   "X-Total-Pages": str(last), "X-Next-Page": str(page + 1) if page < last
                   else ""}
        if page < last:
            headers["Link"] = (f'<{self.url}{path}?page={page + 1}&per_page={size}>; '
                               'rel="next"')
        return 200, headers, items[(page - 1) * size:page * size]

    def _edit(self, match, query, body) -> tuple[int, dict, object]:
        iid, note_id = int(match[1]), int(match[2])
        for note in self.notes.get(iid, []):
            if note["id"] == note_id:
                if note["author"]["id"] != self.user_id:
                    return 403, {}, {"message": "403 Forbidden"}
                if isinstance(body, dict) and isinstance(body.get("body"), str):
                    note["body"] = body["body"]
                return 200, {}, note
        return 404, {}, {"message": "404 Not found"}


PROJECT = r"/api/v4/projects/[^/]+"
ROUTES = [
    ("GET", "/api/v4/user", FakeGitLab._me),
    ("GET", PROJECT, FakeGitLab._project),
    ("POST", PROJECT + r"/statuses/([0-9a-f]+)", FakeGitLab._status),
    ("GET", PROJECT + r"/merge_requests/(\d+)", FakeGitLab._merge_request),
    ("GET", PROJECT + r"/merge_requests/(\d+)/notes", FakeGitLab._page),
    ("POST", PROJECT + r"/merge_requests/(\d+)/notes", FakeGitLab._create_note),
    ("PUT", PROJECT + r"/merge_requests/(\d+)/notes/(\d+)", FakeGitLab._edit),
]


class _Handler(BaseHTTPRequestHandler):
    api: FakeGitLab
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
            body = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
        with api.lock:
            count = len(api.requests) + 1
            headers: dict = {}
            if count <= api.rate_limit_first:
                status, payload = 429, {"message": "429 Too Many Requests"}
                headers["Retry-After"] = api.retry_after
            elif count <= api.rate_limit_first + api.fail_first:
                status, payload = 502, {"message": "502 Bad Gateway"}
            elif self.headers.get("PRIVATE-TOKEN") != api.token:
                status, payload = 401, {"message": "401 Unauthorized"}
            else:
                status, headers, payload = api.answer(self.command, split.path,
                                                      parse_qs(split.query), body)
            api.requests.append(Seen(self.command, self.path, dict(self.headers), body,
                                     status))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve
