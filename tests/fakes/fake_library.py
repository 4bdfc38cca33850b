"""A fake Sylabs Library server, for tests of ``apptainer push library://...``.

The Sylabs Library (cloud.sylabs.io, or a self-hosted Singularity Enterprise) is a hosted
service that cannot run here: the tests have no network to it and no account. This module
stands in for it on 127.0.0.1 by speaking the documented Library API (the OpenAPI spec in
github.com/sylabs/scs-library-client, ``api/server/openapi.yml``: ``{"data": ...}``
answers, ``{"error": {"code", "message"}}`` errors), as the client that Apptainer 1.4.5
links (github.com/apptainer/container-library-client, a fork of scs-library-client) calls
it. The tests drive it only through the real ``apptainer`` client, so what passes here is
what that client sends, not what we assumed.

What the client calls, in order (each request is kept in ``requests``, without headers):

* ``GET /assets/config/config.prod.json`` — the remote endpoint's service map (library,
  token and keyserver URIs; all point back here). Apptainer fetches it over ``http://``
  only for a remote marked ``Insecure``; otherwise it insists on https.
* ``GET /v1/token-status`` — only for ``apptainer remote login``, which checks a token
  before storing it (``pipeline.library`` writes the remote's config itself instead).
* ``GET /v1/oci-redirect`` — answered 404, so the client falls back to the classic upload
  (the real service may redirect pushes to its OCI registry instead).
* ``GET``/``POST /v1/entities``, ``/v1/collections``, ``/v1/containers``, ``/v1/images``
  — find or create each level of ``entity/collection/container``, then the image record,
  keyed by the SIF's ``sha256.<hex>`` hash (``GET /v1/images/...?arch=amd64``).
* ``GET /version`` — the API version; 2.0.0-alpha.2 selects the v2 upload and arch tags.
* ``POST /v2/imagefile/<image id>`` (size and checksums) — returns an upload URL standing
  in for S3's presigned URL; ``PUT`` of the SIF bytes there, which carries no bearer token
  (as for S3, the URL's ``sig`` is the credential) and is refused unless the bytes match the
  declared hash; then ``PUT /v2/imagefile/<image id>/_complete``. ``POST
  /v1/imagefile/<image id>`` (the pre-v2 upload) is taken too. The multipart upload
  (``.../_multipart``, tried only above 64 MiB) is answered 404, which the client takes as
  "not supported" and falls back to the single upload.
* ``GET``/``POST /v2/tags/<container id>`` (``/v1/tags/...`` for pre-v2 clients) — the
  tag(s), per architecture.

A signed push checks its signature against the local keyring first; with the key there
(as ``pipeline.library`` arranges), no keyserver request is made.

Every API call except ``/version``, the config map and the upload URL needs
``Authorization: Bearer <token>`` with the token given to ``FakeLibrary``, else it is
answered 401 with the API's JSON error body. (The spec asks the token of the creating calls;
the real service also answers a bad token 401 on reads of private entries. Asking it
everywhere makes a push without the token fail at its first call.)
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

API_VERSION = "2.0.0-alpha.2"
QUOTA = 10 * 1024**3
MESSAGES = {401: "Not authorized - please authenticate", 403: "Forbidden", 404: "Not found",
            405: "Method not allowed", 409: "Conflict"}


@dataclass
class Request:
    method: str
    path: str  # with the query string
    status: int
    authorized: bool  # the bearer token matched (the token itself is never kept)


@dataclass
class Image:
    id: str
    container: str  # "entity/collection/container"
    hash: str  # "sha256.<hex>", as the client declares it
    arch: str
    description: str = ""
    data: bytes | None = None
    tags: list = field(default_factory=list)


class FakeLibrary:
    """The fake service; use as ``with FakeLibrary(token) as library: ... library.url``."""

    def __init__(self, token: str):
        self.token = token
        self.url = ""
        self.requests: list[Request] = []
        self.entities: dict[str, dict] = {}  # name -> record
        self.collections: dict[str, dict] = {}  # "entity/collection" -> record
        self.containers: dict[str, dict] = {}  # "entity/collection/container" -> record
        self.image_records: dict[str, Image] = {}  # image id -> record
        self.tags: dict[str, dict] = {}  # container id -> {arch: {tag: image id}}
        self._uploads: dict[str, str] = {}  # upload secret -> image id
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # What the tests read.
    @property
    def images(self) -> dict[str, bytes]:
        """``"entity/collection/container:tag"`` -> the uploaded SIF bytes (any arch)."""
        return {ref: image.data for ref, image in self.tagged().items()}

    @property
    def hashes(self) -> dict[str, str]:
        """``"entity/collection/container:tag"`` -> the image hash the client declared."""
        return {ref: image.hash for ref, image in self.tagged().items()}

    def tagged(self) -> dict[str, Image]:
        """``"entity/collection/container:tag"`` -> the image record, once its upload is done."""
        with self._lock:
            out = {}
            for container_id, by_arch in self.tags.items():
                name = self._container_name(container_id)
                for tags in by_arch.values():
                    for tag, image_id in tags.items():
                        image = self.image_records[image_id]
                        if image.data is not None:
                            out[f"{name}:{tag}"] = image
            return out

    def tagged_by_arch(self) -> dict[tuple[str, str], Image]:
        """``("entity/collection/container:tag", arch)`` -> the image record, once uploaded."""
        with self._lock:
            return {(f"{self._container_name(cid)}:{tag}", arch): self.image_records[iid]
                    for cid, by_arch in self.tags.items() for arch, tags in by_arch.items()
                    for tag, iid in tags.items() if self.image_records[iid].data is not None}

    # Lifecycle.
    def __enter__(self) -> FakeLibrary:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # The API, called by the handler with the lock held.
    def _container_name(self, container_id: str) -> str:
        return next(name for name, c in self.containers.items() if c["id"] == container_id)

    def _route(  # noqa: PLR0911 - a router: one return per route of the fake API
            self, method: str, path: str, query: dict, body: bytes, authorized: bool):
        """(status, JSON-able payload or None); payload is wrapped as the API's ``data``."""
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/assets/config/config.prod.json":
            services = ("libraryAPI", "tokenAPI", "keystoreAPI")
            return 200, {"raw": {name: {"uri": self.url} for name in services}}
        if method == "GET" and path == "/version":
            return 200, {"version": "fake-library", "apiVersion": API_VERSION}
        if method == "PUT" and parts[0] == "_upload":
            return self._receive(query.get("sig", [""])[0], body)
        if not authorized:
            return 401, None
        doc = json.loads(body) if body and method in ("POST", "PUT") else {}
        if path == "/v1/token-status":
            return 200, {"status": "valid"}
        if path == "/v1/oci-redirect":
            return 404, None
        if parts[:2] == ["v1", "entities"]:
            return self._find_or_make(method, self.entities, "/".join(parts[2:]), doc,
                                      lambda d: d["name"], {"collections": []})
        if parts[:2] == ["v1", "collections"]:
            def collection_name(d):
                entity = next(e for e in self.entities.values() if e["id"] == d["entity"])
                return f"{entity['name']}/{d['name']}"
            return self._find_or_make(method, self.collections, "/".join(parts[2:]), doc,
                                      collection_name, {"containers": []})
        if parts[:2] == ["v1", "containers"]:
            def container_name(d):
                collection = next(name for name, c in self.collections.items()
                                  if c["id"] == d["collection"])
                return f"{collection}/{d['name']}"
            return self._find_or_make(method, self.containers, "/".join(parts[2:]), doc,
                                      container_name, {"images": [], "archTags": {}})
        if parts[:2] == ["v1", "images"]:
            return self._images(method, "/".join(parts[2:]), query, doc)
        if parts[:2] in (["v2", "imagefile"], ["v1", "imagefile"]):
            return self._imagefile(method, parts, doc, body)
        if parts[:2] in (["v1", "tags"], ["v2", "tags"]) and len(parts) == 3:
            return self._tags(method, parts[0], parts[2], doc)
        return 404, None

    def _find_or_make(self, method, table, name, doc, name_of, extra):
        if method == "GET":
            return (200, table[name]) if name in table else (404, None)
        if method == "POST" and not name:
            full = name_of(doc)
            if full in table:
                return 409, None
            table[full] = {**doc, **extra, "id": secrets.token_hex(12), "deleted": False}
            return 200, table[full]
        return 405, None

    def _images(self, method, ref, query, doc):
        if method == "GET":
            name, _, version = ref.rpartition(":")
            arch = query.get("arch", [""])[0]
            container = self.containers.get(name)
            for image in self.image_records.values():
                if (image.container == name and image.hash == version
                        and arch in ("", image.arch)):
                    return 200, self._image_json(image)
            if container and not version.startswith("sha256."):
                for by_tag in self.tags.get(container["id"], {}).values():
                    if version in by_tag:
                        return 200, self._image_json(self.image_records[by_tag[version]])
            return 404, None
        if method == "POST" and not ref:
            name = self._container_name(doc["container"])
            image = Image(secrets.token_hex(12), name, doc["hash"], doc.get("arch", ""),
                          doc.get("description", ""))
            self.image_records[image.id] = image
            self.containers[name]["images"].append(image.id)
            return 200, self._image_json(image)
        return 405, None

    def _image_json(self, image: Image) -> dict:
        container = self.containers[image.container]
        return {"id": image.id, "hash": image.hash, "container": container["id"],
                "description": image.description, "arch": image.arch,
                "uploaded": image.data is not None,
                "size": len(image.data) if image.data is not None else 0}

    def _imagefile(self, method, parts, doc, body):
        image = self.image_records.get(parts[2]) if len(parts) > 2 else None
        if image is None:
            return 404, None
        action = parts[3] if len(parts) > 3 else ""
        if parts[0] == "v1" and method == "POST" and not action:
            return self._store(image, body)
        if method == "POST" and not action:
            secret = secrets.token_hex(16)
            self._uploads[secret] = image.id
            return 200, {"uploadURL": f"{self.url}/_upload/{image.id}?sig={secret}"}
        if method == "PUT" and action == "_complete":
            if image.data is None:
                return 400, None
            used = sum(len(i.data) for i in self.image_records.values() if i.data is not None)
            return 200, {"quota": {"quotaTotal": QUOTA, "quotaUsage": used},
                         "containerUrl": f"library/{image.container}"}
        # `_multipart*`: not offered; the client then uploads in one piece.
        return 404, None

    def _receive(self, secret: str, body: bytes):
        image_id = self._uploads.pop(secret, None)
        if image_id is None:
            return 403, None
        return self._store(self.image_records[image_id], body)

    def _store(self, image: Image, body: bytes):
        # The real service refuses bytes that do not match the hash the image was made with.
        if "sha256." + hashlib.sha256(body).hexdigest() != image.hash:
            return 400, None
        image.data = body
        return 200, None

    def _tags(self, method, version, container_id, doc):
        if not any(c["id"] == container_id for c in self.containers.values()):
            return 404, None
        by_arch = self.tags.setdefault(container_id, {})
        if method == "GET":
            if version == "v2":
                return 200, by_arch
            return 200, {t: i for tags in by_arch.values() for t, i in tags.items()}
        if method == "POST":
            image = self.image_records.get(doc.get("ImageID", ""))
            if image is None:
                return 404, None
            arch = doc.get("Arch") or image.arch or "amd64"
            by_arch.setdefault(arch, {})[doc["Tag"]] = image.id
            image.arch = image.arch or arch  # the v1 image record carries no arch
            image.tags.append(doc["Tag"])
            return 200, None
        return 405, None


def _handler(library: FakeLibrary):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # requests are kept, not printed
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            url = urlsplit(self.path)
            body = self._body()
            authorized = self.headers.get("Authorization", "") == f"Bearer {library.token}"
            with library._lock:
                try:
                    status, payload = library._route(self.command, url.path,
                                                     parse_qs(url.query), body, authorized)
                except (KeyError, ValueError, StopIteration) as err:
                    status, payload = 400, {"message": f"bad request: {err!r}"}
                library.requests.append(Request(self.command, self.path, status, authorized))
            if status >= 400:
                message = MESSAGES.get(status, "Bad Request")
                if isinstance(payload, dict) and "message" in payload:
                    message = payload["message"]
                out = {"error": {"code": status, "message": message}}
            elif isinstance(payload, dict) and "raw" in payload:
                out = payload["raw"]
            else:
                out = {"data": payload}
            data = json.dumps(out).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="fake-library"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler
