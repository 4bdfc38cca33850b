"""A reverse proxy in front of the real lab registry that injects faults on a schedule.

Every request is forwarded to the registry unchanged (the Host header too, so the upload
locations the registry hands out point back at the proxy), except those the schedule picks:

* ``503``: answered with 503 Service Unavailable, never forwarded;
* ``429``: answered with 429 and ``Retry-After: 1``, never forwarded;
* ``drop``: the connection is closed without an answer, after reading the request (for an
  upload, after the registry got nothing: the client must send it again);
* ``cut``: forwarded, but the answer's body is cut off half-way (a dropped download);
* ``401``: answered with a Basic challenge unless the request carries ``auth``.

With ``bearer=(username, password)`` it stands in for Docker Hub's token flow, a hosted
service that cannot run here (https://distribution.github.io/distribution/spec/auth/token/):
requests without the token get ``401`` with a ``Bearer realm=".../token",service,scope``
challenge; ``GET /token?service=...&scope=...`` with those Basic credentials answers
``{"token": ...}`` for that scope; a token is accepted only for the repository of its scope.

The schedule is a list of (predicate, fault, times): the first matching rule with times left
fires.  ``faults`` records what fired, so a test can show the faults really happened.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FaultyProxy:
    def __init__(self, upstream: str, schedule: list, auth: str | None = None,
                 bearer: tuple[str, str] | None = None):
        self.upstream = upstream  # host:port of the real registry
        self.schedule = [[match, fault, times] for match, fault, times in schedule]
        self.auth = auth  # the Authorization header value that is accepted, if any
        self.bearer = bearer
        self.tokens: dict[str, str] = {}  # token -> the repository its scope names
        self.scopes: list[str] = []  # the scopes tokens were asked for
        self.faults: list[tuple[str, str, str]] = []
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultyProxy:  # noqa: PYI034 - not subclassed
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _pick(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests.append((method, path))
            for rule in self.schedule:
                match, fault, times = rule
                if times > 0 and match(method, path):
                    rule[2] -= 1
                    self.faults.append((fault, method, path))
                    return fault
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(self, status: int, headers: dict) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _token(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                user, password = proxy.bearer
                expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self._answer(401, {})
                    return
                scope = query.get("scope", [""])[0]
                proxy.scopes.append(scope)
                token = secrets.token_hex(16)
                proxy.tokens[token] = scope.split(":")[1] if scope.count(":") == 2 else ""
                data = json.dumps({"token": token}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _bearer_refused(self) -> bool:
                found = re.match(r"/v2/(.+?)/(manifests|blobs|tags)/", self.path)
                repository = found.group(1) if found else ""
                given = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if given in proxy.tokens and proxy.tokens[given] == repository:
                    return False
                scope = f',scope="repository:{repository}:pull,push"' if repository else ""
                self._answer(401, {"WWW-Authenticate": f'Bearer realm="http://{proxy.address}'
                                   f'/token",service="fake-hub"{scope}'})
                return True

            def _handle(self) -> None:
                body = self._body()
                if proxy.bearer and self.path.startswith("/token"):
                    self._token()
                    return
                if proxy.bearer and self._bearer_refused():
                    proxy._pick(self.command, self.path)
                    return
                if proxy.auth and self.headers.get("Authorization") != proxy.auth:
                    proxy._pick(self.command, self.path)  # recorded, but no scheduled fault
                    self._answer(401, {"WWW-Authenticate": 'Basic realm="faulty proxy"'})
                    return
                fault = proxy._pick(self.command, self.path)
                if fault == "503":
                    self._answer(503, {})
                    return
                if fault == "429":
                    self._answer(429, {"Retry-After": "1"})
                    return
                if fault == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "authorization")}
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=120)
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "cut" and self.command != "HEAD":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        return Handler
