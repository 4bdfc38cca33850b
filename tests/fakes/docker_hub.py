"""An in-process stand-in for Docker Hub: its token service and a registry that obeys it.

Docker Hub itself cannot be reached from the tests, so this reproduces the behaviour the
client must cope with (https://distribution.github.io/distribution/spec/auth/token/):

* ``GET /token?service=fake-hub&scope=...`` (the realm): Basic credentials checked against
  ``users`` (wrong: 401); each scope is granted only what policy allows (anonymous: pull on
  public repositories; a user: pull and push in its own namespace and the ``writable``
  ones, pull on public ones) and silently less otherwise, as Docker Hub does;
  ``{"token", "access_token", "expires_in", "issued_at"}``; every ``token_503_every``-th
  call answers 503.
* ``/v2/...``: a ``Bearer`` token is required.  None: 401 with a challenge naming the scope
  the request needs; expired or unknown: ``error="invalid_token"``; short of an action:
  ``error="insufficient_scope"``.  Reads need pull, writes pull and push, a mount
  (``?mount=&from=``) also pull on its source; a mount whose source pull was asked for but
  not granted falls back to a plain upload (202), as Docker Hub does.
* Authorized requests go to ``upstream`` (host:port of a real registry, Host header kept so
  upload locations lead back here, bodies streamed) or, without one, to a small in-memory
  registry: blobs (monolithic and chunked uploads, mounts, digests checked), manifests by
  tag and digest, tag lists in pages (``tags_page``, ``?n=&last=``, a ``Link`` header).

Everything is recorded: ``requests`` (method, path, status, challenge error) and
``token_requests`` (scopes asked, user, status).  ``clock`` lets a test expire tokens
without sleeping.

Example::

    with FakeDockerHub(users={"robot": "pw"}) as hub:
        requests.get(f"{hub.url}/v2/library/hello/manifests/latest")  # 401, Bearer challenge
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK = 1 << 16
SERVICE = "fake-hub"
_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)$")
_WRITE = frozenset({"pull", "push"})
_PULL = frozenset({"pull"})


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with its query
    status: int
    error: str | None = None  # the challenge's error= on a 401


@dataclass(frozen=True)
class TokenRequest:
    scopes: tuple[str, ...]
    user: str | None  # the user named in the Basic credentials, right or wrong
    authenticated: bool
    status: int


@dataclass
class Grant:
    user: str | None
    expires: float
    granted: dict[str, frozenset[str]] = field(default_factory=dict)  # repository -> actions
    asked: dict[str, frozenset[str]] = field(default_factory=dict)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _scopes(values: Iterable[str]) -> dict[str, frozenset[str]]:
    """``repository:NAME:ACTIONS`` scopes (repeated or space-separated) per repository."""
    found: dict[str, frozenset[str]] = {}
    for value in values:
        for scope in value.split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name:
                found[name] = found.get(name, frozenset()) | frozenset(actions.split(","))
    return found


def _scope_text(needed: dict[str, frozenset[str]]) -> str:
    return " ".join(f"repository:{name}:{','.join(sorted(actions))}"
                    for name, actions in needed.items())


class FakeDockerHub:
    def __init__(  # noqa: PLR0913 - one knob per Docker Hub behaviour a test may want
                 self, upstream: str | None = None, *, users: dict[str, str] | None = None,
                 public: Iterable[str] = ("library/*",), token_lifetime: float = 3.0,
                 token_503_every: int = 0, private: Iterable[str] = (),
                 writable: Iterable[str] = (), clock: Callable[[], float] = time.monotonic,
                 upstream_login: tuple[str, str] | None = None, tags_page: int = 100):
        self.upstream = upstream
        # Tag lists come in pages of at most this many (``?n=`` asks for fewer), the next
        # one named in a ``Link: <...?last=TAG&n=N>; rel="next"`` header, as Docker Hub,
        # GHCR and Distribution answer.
        self.tags_page = tags_page
        # The upstream registry's own login (the lab's registries want one), sent on every
        # forwarded request in place of the client's token.
        self.upstream_authorization = ("Basic " + base64.b64encode(
            ":".join(upstream_login).encode()).decode()) if upstream_login else None
        self.users = dict({"robot": "pw"} if users is None else users)
        self.public = tuple(public)  # globs over repository names
        self.private = tuple(private)  # globs: never public, even when ``public`` matches
        self.writable = tuple(writable)  # namespace globs every known user may push to
        self.token_lifetime = token_lifetime
        self.token_503_every = token_503_every
        self.clock = clock
        self.requests: list[Seen] = []
        self.token_requests: list[TokenRequest] = []
        self.tokens: dict[str, Grant] = {}
        # The in-memory registry: blobs are shared, visible in a repository once linked.
        self.blobs: dict[str, bytes] = {}
        self.links: dict[str, set[str]] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # digest -> (media type, body)
        self.manifest_links: dict[str, set[str]] = {}
        self.tags: dict[tuple[str, str], str] = {}
        self.uploads: dict[str, tuple[str, bytearray]] = {}  # uuid -> (repository, data)
        self._token_calls = 0
        self.lock = threading.RLock()  # the handler records requests while holding it
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.address}"
        self.realm = f"{self.url}/token"

    def __enter__(self) -> FakeDockerHub:
        # A short poll interval: shutdown() waits for it, once per test.
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- policy ---------------------------------------------------------------------------
    def allowed(self, user: str | None, repository: str) -> frozenset[str]:
        actions: set[str] = set()
        if any(fnmatch(repository, g) for g in self.public) and not any(
                fnmatch(repository, g) for g in self.private):
            actions.add("pull")
        namespace = repository.split("/", 1)[0]
        if user and (namespace == user or any(fnmatch(namespace, g) for g in self.writable)):
            actions |= _WRITE
        return frozenset(actions)

    # -- seeding, for tests ---------------------------------------------------------------
    def add_blob(self, repository: str, data: bytes) -> str:
        digest = sha256(data)
        with self.lock:
            self.blobs[digest] = data
            self.links.setdefault(repository, set()).add(digest)
        return digest

    def add_manifest(self, repository: str, tag: str, body: bytes,
                     media_type: str = "application/vnd.oci.image.manifest.v1+json") -> str:
        digest = sha256(body)
        with self.lock:
            self.manifests[digest] = (media_type, body)
            self.manifest_links.setdefault(repository, set()).add(digest)
            self.tags[(repository, tag)] = digest
        return digest

    # -- the token service ----------------------------------------------------------------
    def issue(self, query: dict[str, list[str]], authorization: str | None
              ) -> tuple[int, dict, dict]:
        """(status, headers, JSON body) of a token request."""
        scopes = tuple(query.get("scope", []))
        user, authenticated = None, False
        if authorization:
            kind, _, encoded = authorization.partition(" ")
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = None, None
            authenticated = kind.lower() == "basic" and user in self.users and \
                self.users[user] == password
        with self.lock:
            self._token_calls += 1
            if self.token_503_every and self._token_calls % self.token_503_every == 0:
                status, headers, body = 503, {"Retry-After": "1"}, {"details": "try later"}
            elif authorization and not authenticated:
                status, headers, body = 401, {}, {"details": "incorrect username or password"}
            else:
                status, headers = 200, {}
                asked = _scopes(scopes)
                grant = Grant(user if authenticated else None,
                              self.clock() + self.token_lifetime, asked=asked,
                              granted={name: actions & self.allowed(user, name)
                                       for name, actions in asked.items()})
                token = secrets.token_urlsafe(24)
                self.tokens[token] = grant
                issued = datetime.now(timezone.utc).isoformat(timespec="seconds")
                body = {"token": token, "access_token": token,
                        # An integer, as Docker Hub sends it: Docker's own client refuses
                        # anything else ("cannot unmarshal number 3.0").
                        "expires_in": max(1, round(self.token_lifetime)),
                        "issued_at": issued.replace("+00:00", "Z")}
            self.token_requests.append(TokenRequest(scopes, user, authenticated, status))
        return status, headers, body

    def challenge(self, authorization: str | None, needed: dict[str, frozenset[str]]
                  ) -> str | None:
        """The WWW-Authenticate value refusing the request, or None when it may go on."""
        value = f'Bearer realm="{self.realm}",service="{SERVICE}"'
        if needed:
            value += f',scope="{_scope_text(needed)}"'
        token = (authorization or "").removeprefix("Bearer ")
        if not (authorization or "").startswith("Bearer "):
            return value
        with self.lock:
            grant = self.tokens.get(token)
        if grant is None or self.clock() >= grant.expires:
            return value + ',error="invalid_token"'
        if any(not actions <= grant.granted.get(name, frozenset())
               for name, actions in needed.items()):
            return value + ',error="insufficient_scope"'
        return None


class _Handler(BaseHTTPRequestHandler):
    hub: FakeDockerHub
    _refusal: str | None = None  # the error= of the 401 being sent, for the record
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each small answer waits for a delayed ACK

    def log_message(self, *args) -> None:
        pass

    # -- plumbing -------------------------------------------------------------------------
    def send_response(self, code: int, message: str | None = None) -> None:
        # Recorded before the answer leaves: a client reacting to it (a retry) comes after.
        with self.hub.lock:
            self.hub.requests.append(Seen(self.command, self.path, code, self._refusal))
        super().send_response(code, message)

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None,
               head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value, headers: dict | None = None) -> None:
        self._reply(status, json.dumps(value).encode(),
                    {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str, headers: dict | None = None):
        self._json(status, {"errors": [{"code": code, "message": message}]}, headers)

    def _body(self) -> Iterator[bytes]:
        """The request body in pieces, Content-Length or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                yield self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            piece = self.rfile.read(min(CHUNK, left))
            if not piece:
                return
            left -= len(piece)
            yield piece

    def _drain(self) -> None:  # unread bytes would be taken for the next request
        for _ in self._body():
            pass

    def _handle(self) -> None:
        self._refusal = None
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/token":
            self._drain()
            status, headers, body = self.hub.issue(query, self.headers.get("Authorization"))
            self._json(status, body, headers)
        elif url.path.startswith("/v2/"):
            self._registry(url.path, query)
        else:
            self._drain()
            self._error(404, "NOT_FOUND", "no such endpoint")

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    # -- the registry front ---------------------------------------------------------------
    def _needed(self, name: str, query: dict) -> dict[str, frozenset[str]]:
        needed = {name: _PULL if self.command in ("GET", "HEAD") else _WRITE}
        source = query.get("from", [None])[0]
        if self.command == "POST" and "mount" in query and source:
            needed[source] = needed.get(source, frozenset()) | _PULL
        return needed

    def _registry(self, path: str, query: dict) -> None:
        found = _ROUTE.match(path)
        needed = self._needed(found["name"], query) if found else {}
        authorization = self.headers.get("Authorization")
        mount_allowed = True
        source = query.get("from", [None])[0]
        if found and source in needed and source != found["name"]:
            # Docker Hub: a mount it may not do (source pull asked for, not granted) is
            # not refused but answered as a plain upload.
            with self.hub.lock:
                grant = self.hub.tokens.get((authorization or "").removeprefix("Bearer "))
            if grant and source in grant.asked and \
                    "pull" not in grant.granted.get(source, frozenset()):
                needed.pop(source)
                mount_allowed = False
        refusal = self.hub.challenge(authorization, needed)
        if refusal is not None:
            self._drain()
            error = re.search(r'error="([^"]*)"', refusal)
            self._refusal = error.group(1) if error else None
            self._error(401, "UNAUTHORIZED", "authentication required",
                        {"WWW-Authenticate": refusal})
            return
        if self.hub.upstream:
            self._forward(mount_allowed)
        elif not found:
            self._drain()
            if path == "/v2/":
                self._json(200, {})
            else:
                self._error(404, "NOT_FOUND", path)
        else:
            self._memory(found["name"], found["kind"], found["rest"], query, mount_allowed)

    def _forward(self, mount_allowed: bool) -> None:
        path = self.path
        if not mount_allowed:  # the upstream would mount: make it a plain upload
            path = urlsplit(path).path
        upstream = http.client.HTTPConnection(self.hub.upstream, timeout=120)
        try:
            self._send_upstream(upstream, path)
            self._relay(upstream.getresponse())
        finally:
            upstream.close()

    def _send_upstream(self, upstream: http.client.HTTPConnection, path: str) -> None:
        # The Host header is passed on as it came: the upload locations the registry
        # builds from it then lead back here.
        upstream.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
        for key, value in self.headers.items():
            if key.lower() not in ("connection", "authorization", "transfer-encoding",
                                   "content-length"):
                upstream.putheader(key, value)
        if self.hub.upstream_authorization:
            upstream.putheader("Authorization", self.hub.upstream_authorization)
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        if chunked:
            upstream.putheader("Transfer-Encoding", "chunked")
        elif self.headers.get("Content-Length") is not None:
            upstream.putheader("Content-Length", self.headers["Content-Length"])
        upstream.endheaders()
        for piece in self._body():  # streamed: layers may be large
            upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            upstream.send(b"0\r\n\r\n")

    def _relay(self, response: http.client.HTTPResponse) -> None:
        length = response.getheader("Content-Length")
        has_body = self.command != "HEAD" and response.status not in (204, 304)
        chunked = length is None and has_body
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("connection", "transfer-encoding"):
                self.send_header(key, value)
        if length is None:
            self.send_header(*(("Transfer-Encoding", "chunked") if chunked
                               else ("Content-Length", "0")))
        self.end_headers()
        while has_body and (piece := response.read(CHUNK)):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    # -- the in-memory registry -----------------------------------------------------------
    def _memory(self, name: str, kind: str, rest: str, query: dict,
                mount_allowed: bool) -> None:
        body = b"".join(self._body())
        hub, method = self.hub, self.command
        with hub.lock:
            if kind == "tags" and rest == "list" and method == "GET":
                self._tags(name, query)
            elif kind == "manifests":
                self._manifest(name, rest, body)
            elif kind == "blobs" and rest.startswith("uploads/"):
                self._upload(name, rest.removeprefix("uploads/"), query, body, mount_allowed)
            elif kind == "blobs" and method in ("GET", "HEAD"):
                if rest not in hub.links.get(name, set()):
                    self._error(404, "BLOB_UNKNOWN", f"blob unknown: {rest}")
                    return
                data = hub.blobs[rest]
                self._reply(200, data, {"Content-Length": str(len(data)),
                                        "Content-Type": "application/octet-stream",
                                        "Docker-Content-Digest": rest}, head=method == "HEAD")
            elif kind == "blobs" and method == "DELETE":
                hub.links.get(name, set()).discard(rest)
                self._reply(202)
            else:
                self._error(405, "UNSUPPORTED", f"{method} {self.path}")

    def _tags(self, name: str, query: dict) -> None:
        hub = self.hub
        tags = sorted(t for (n, t) in hub.tags if n == name)
        if not tags:
            self._error(404, "NAME_UNKNOWN", f"repository name not known: {name}")
            return
        size = min(int(query.get("n", [hub.tags_page])[0]), hub.tags_page)
        last = query.get("last", [""])[0]
        page = [t for t in tags if t > last][:size]
        more = page and page[-1] != tags[-1]
        self._json(200, {"name": name, "tags": page}, {"Link": (
            f'</v2/{name}/tags/list?last={page[-1]}&n={size}>; rel="next"')} if more else {})

    def _manifest(self, name: str, reference: str, body: bytes) -> None:
        hub, method = self.hub, self.command
        digest = reference if reference.startswith("sha256:") else \
            hub.tags.get((name, reference))
        if method == "PUT":
            actual = sha256(body)
            if reference.startswith("sha256:") and reference != actual:
                self._error(400, "DIGEST_INVALID", f"provided digest {reference} does not "
                            f"match content {actual}")
                return
            missing = self._missing_blobs(name, body)
            if missing:
                self._error(400, "MANIFEST_BLOB_UNKNOWN", f"blob unknown: {missing}")
                return
            media_type = self.headers.get("Content-Type", "application/octet-stream")
            hub.manifests[actual] = (media_type, body)
            hub.manifest_links.setdefault(name, set()).add(actual)
            if not reference.startswith("sha256:"):
                hub.tags[(name, reference)] = actual
            self._reply(201, headers={"Location": f"/v2/{name}/manifests/{actual}",
                                      "Docker-Content-Digest": actual})
        elif digest is None or digest not in hub.manifest_links.get(name, set()):
            self._error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {reference}")
        elif method in ("GET", "HEAD"):
            media_type, data = hub.manifests[digest]
            self._reply(200, data, {"Content-Type": media_type,
                                    "Content-Length": str(len(data)),
                                    "Docker-Content-Digest": digest}, head=method == "HEAD")
        elif method == "DELETE":
            hub.manifest_links[name].discard(digest)
            self._reply(202)
        else:
            self._error(405, "UNSUPPORTED", f"{method} {self.path}")

    def _missing_blobs(self, name: str, body: bytes) -> str | None:
        try:
            manifest = json.loads(body)
        except ValueError:
            return None
        if not isinstance(manifest, dict):
            return None
        wanted = [manifest.get("config") or {}, *manifest.get("layers", [])]
        have = self.hub.links.get(name, set())
        return next((d["digest"] for d in wanted
                     if isinstance(d, dict) and d.get("digest") and d["digest"] not in have),
                    None)

    def _upload(self, name: str, uuid: str, query: dict, body: bytes,
                mount_allowed: bool) -> None:
        hub, method = self.hub, self.command
        if method == "POST" and not uuid:
            self._start_upload(name, query, body, mount_allowed)
            return
        owner, data = hub.uploads.get(uuid, (None, bytearray()))
        if owner != name:
            self._error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown")
        elif method == "PATCH":
            data += body
            self._upload_status(202, name, uuid, len(data))
        elif method == "PUT":
            data += body
            del hub.uploads[uuid]
            self._finish(name, data, query.get("digest", [None])[0])
        elif method == "GET":
            self._upload_status(204, name, uuid, len(data))
        elif method == "DELETE":
            del hub.uploads[uuid]
            self._reply(204)
        else:
            self._error(405, "UNSUPPORTED", f"{method} {self.path}")

    def _start_upload(self, name: str, query: dict, body: bytes, mount_allowed: bool
                      ) -> None:
        hub = self.hub
        mount, source = query.get("mount", [None])[0], query.get("from", [None])[0]
        digest = query.get("digest", [None])[0]
        if mount and source and mount_allowed and mount in hub.links.get(source, set()):
            hub.links.setdefault(name, set()).add(mount)
            self._reply(201, headers={"Location": f"/v2/{name}/blobs/{mount}",
                                      "Docker-Content-Digest": mount})
        elif digest:  # monolithic upload in the POST itself
            self._finish(name, bytearray(body), digest)
        else:
            uuid = secrets.token_hex(16)
            hub.uploads[uuid] = (name, bytearray())
            self._upload_status(202, name, uuid, 0)

    def _upload_status(self, status: int, name: str, uuid: str, size: int) -> None:
        self._reply(status, headers={"Location": f"/v2/{name}/blobs/uploads/{uuid}",
                                     "Range": f"0-{max(size - 1, 0)}",
                                     "Docker-Upload-UUID": uuid})

    def _finish(self, name: str, data: bytearray, digest: str | None) -> None:
        actual = sha256(bytes(data))
        if digest != actual:
            self._error(400, "DIGEST_INVALID", f"provided digest {digest} does not match "
                        f"uploaded content {actual}")
            return
        self.hub.blobs[actual] = bytes(data)
        self.hub.links.setdefault(name, set()).add(actual)
        self._reply(201, headers={"Location": f"/v2/{name}/blobs/{actual}",
                                  "Docker-Content-Digest": actual})
