"""A reverse proxy in front of the real lab registry that injects faults on a schedule.

Every request is forwarded to the registry unchanged (the Host header too, so the upload
locations the registry hands out point back at the proxy), except those the schedule picks:

* ``503``: answered with 503 Service Unavailable, never forwarded;
* ``429``: answered with 429 and ``Retry-After: 1``, never forwarded;
* ``drop``: the connection is closed without an answer, after reading the request (for an
  upload, after the registry got nothing: the client must send it again);
* ``cut``: forwarded, but the answer's body is cut off half-way (a dropped download);
* ``401``: answered with a Basic challenge unless the request carries ``auth``.

The client's ``Authorization`` goes on to the registry (the lab's want a login); chunked
request bodies (the docker daemon's layer uploads) are forwarded whole.  Docker Hub's token
flow is ``docker_hub.FakeDockerHub``'s job, not this proxy's.

The schedule is a list of (predicate, fault, times): the first matching rule with times left
fires.  ``faults`` records what fired, so a test can show the faults really happened.
"""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultyProxy:
    def __init__(self, upstream: str, schedule: list, auth: str | None = None):
        self.upstream = upstream  # host:port of the real registry
        self.schedule = [[match, fault, times] for match, fault, times in schedule]
        self.auth = auth  # the Authorization header value that is accepted, if any
        self.faults: list[tuple[str, str, str]] = []
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultyProxy:
        # A short poll interval: shutdown() waits for it, once per test.
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
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
            disable_nagle_algorithm = True  # else each small answer waits for a delayed ACK

            def log_message(self, *args) -> None:
                pass

            def handle_one_request(self) -> None:
                # BuildKit tries https first and falls back to http only on the answer Go's
                # own plain-http servers (the real registry) give to a TLS hello.
                if self.rfile.peek(1)[:1] == b"\x16":
                    self.wfile.write(b"HTTP/1.0 400 Bad Request\r\n\r\n"
                                     b"Client sent an HTTP request to an HTTPS server.\n")
                    self.close_connection = True
                    return
                super().handle_one_request()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    # The docker daemon streams layer uploads (PATCH) in chunks.
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(self, status: int, headers: dict) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _handle(self) -> None:
                body = self._body()
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
                # The client's login goes on to the registry (the lab's want one); in ``auth``
                # mode the proxy itself checked a login the registry does not know.
                dropped = ("connection", "transfer-encoding", "content-length",
                           *(("authorization",) if proxy.auth else ()))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=120)
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                # A HEAD's length is the resource's, which clients read (a blob's size).
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
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


# Schedule predicates (``(method, path) -> bool``) the tests share.
def blob_put(method: str, path: str) -> bool:
    """The PUT that completes a blob upload."""
    return method == "PUT" and "/blobs/uploads/" in path


def blob_upload(method: str, path: str) -> bool:
    """Any request carrying blob data: the docker daemon's PATCH chunks and the final PUT."""
    return method in ("PUT", "PATCH") and "/blobs/uploads/" in path


def blob_get(method: str, path: str) -> bool:
    return method == "GET" and "/blobs/sha256:" in path


def manifest_put(method: str, path: str) -> bool:
    return method == "PUT" and "/manifests/" in path


def head(method: str, path: str) -> bool:
    return method == "HEAD"
