"""A client of the OCI distribution API: manifests and blobs, with auth and retries.

What publishing needs, and no more: read and write manifests, check, mount, download and
upload blobs.  Registry-to-registry copies go through it, so every byte that is published
is checked against its digest on the way (the registry checks uploads; downloads are
checked here).

* Auth (``auth.py``): anonymous first; on 401 with a ``Basic`` challenge the credentials
  are sent; on a ``Bearer`` challenge a token is fetched from the realm for the scopes the
  challenge names and the request needs (pull, pull+push, plus pull on a mount's source),
  kept per scope set and renewed before it expires or when refused as ``invalid_token``,
  as the token spec and Docker Hub want.
* Retries (tenacity): 429 (waiting what ``Retry-After`` says), 5xx and dropped connections,
  with exponential backoff, bounded in attempts and in total time.  401/403 are not retried:
  the error names the credential variables and the repository.

Example::

    reg = Registry("127.0.0.1:5000")
    body, media_type, digest = reg.manifest("factory/os", "debian12-amd64-0123")
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urljoin

import requests
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from pipeline.tools.digests import sha256_bytes
from pipeline.tools.registry.auth import (
    TokenAuth,
    TokenServiceError,
    needed_scopes,
)
from pipeline.tools.registry.references import base_url, is_local
from pipeline.tools.registry.retries import (
    RetryPolicy,
    Transient,
    WaitOrRetryAfter,
    retry_after,
)

CHUNK = 1 << 20
MANIFEST_TYPES = ("application/vnd.oci.image.index.v1+json, "
                  "application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.list.v2+json, "
                  "application/vnd.docker.distribution.manifest.v2+json")


class RegistryError(RuntimeError):
    """The registry answered with an error that retrying will not fix."""


@dataclass(frozen=True)
class Credentials:
    """A username and password (or token) from the environment, and where they came from."""

    username: str | None = None
    password: str | None = None
    username_var: str = "PIPELINE_REGISTRY_USERNAME"
    password_var: str = "PIPELINE_REGISTRY_PASSWORD"

    @property
    def given(self) -> bool:
        return bool(self.username and self.password)

    @property
    def where(self) -> str:
        """Where the credentials came from, for messages: the variables, or a file."""
        return "/".join(filter(None, (self.username_var, self.password_var)))

    def __repr__(self) -> str:  # never print the password, even in a traceback
        return f"Credentials(username={self.username!r}, password=***)"


class RegistryAuthError(RegistryError):
    """401 or 403: the credentials are missing, wrong, or may not do this."""


class Registry:
    """One registry host; thread-safe (a session per thread, tokens shared)."""

    def __init__(self, host: str, credentials: Credentials | None = None,
                 policy: RetryPolicy | None = None, log=None):
        self.host = host
        self.base = base_url(host)
        self.credentials = credentials or Credentials()
        self.policy = policy or RetryPolicy()
        self.log = log or (lambda line: None)
        # Tokens per scope set, shared by the threads; a session per thread.
        self.auth = TokenAuth(self.credentials.username, self.credentials.password)
        self._local = threading.local()

    # -- plumbing ---------------------------------------------------------------------
    @property
    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _retrying(self) -> Retrying:
        return Retrying(retry=retry_if_exception(lambda e: isinstance(e, Transient)),
                        wait=WaitOrRetryAfter(self.policy), reraise=True,
                        stop=stop_after_attempt(self.policy.attempts)
                        | stop_after_delay(self.policy.total_seconds),
                        before_sleep=lambda s: self.log(
                            f"registry {self.host}: {s.outcome.exception()}; retrying "
                            f"(attempt {s.attempt_number + 1} of {self.policy.attempts})"))

    def call(self, attempt):
        """Run ``attempt()`` (one try of a whole operation) under the retry policy."""
        try:
            return self._retrying()(attempt)
        except Transient as err:
            hint = "; is it up? (`python -m pipeline lab status`)" if is_local(self.host) else ""
            raise RegistryError(f"registry {self.host}: {err}; gave up after retries{hint}"
                                ) from None

    def answers(self) -> bool:
        """True when ``/v2/`` answers (200, or 401 for a registry that wants a login)."""
        try:
            response = self._session.get(f"{self.base}/v2/", timeout=5)
        except requests.RequestException:
            return False
        return response.status_code in (HTTPStatus.OK, HTTPStatus.UNAUTHORIZED)

    def _send(self, method: str, url: str, repository: str, *, headers=None, data=None,
              stream=False, params=None) -> requests.Response:
        """One request, authenticated; transient failures raise Transient."""
        url = urljoin(self.base + "/", url)
        headers = dict(headers or {})
        needed = needed_scopes(method, repository, (params or {}).get("from"))
        # A first try, then one per challenge the auth can answer: a pull-only token meets
        # "insufficient_scope", an old one "invalid_token"; TokenAuth stops a loop.
        for _ in range(4):
            auth = self.auth.header(needed)
            if auth:
                headers["Authorization"] = auth
            else:
                headers.pop("Authorization", None)
            if hasattr(data, "seek"):
                data.seek(0)
            try:
                response = self._session.request(method, url, headers=headers, data=data,
                                                  stream=stream, params=params, timeout=(10, 120),
                                                  allow_redirects=True)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as err:
                raise Transient(f"{method} {repository}: connection failed "
                                f"({type(err).__name__})") from None
            if response.status_code != HTTPStatus.UNAUTHORIZED:
                break
            try:  # a token service that is down raises Transient: retried like the rest
                if not self.auth.answer(response.headers.get("WWW-Authenticate", ""), needed):
                    break
            except TokenServiceError as err:
                raise RegistryError(f"registry {self.host}: {err}") from None
        if response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
            raise Transient(f"{method} {repository}: 429 too many requests",
                            retry_after(response.headers))
        if response.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise Transient(f"{method} {repository}: HTTP {response.status_code}",
                            retry_after(response.headers))
        if response.status_code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise RegistryAuthError(self._auth_message(response.status_code, repository))
        return response

    def _auth_message(self, status: int, repository: str) -> str:
        creds = self.credentials
        if not creds.given:
            what = (f"no credentials were given: set {creds.username_var} and "
                    f"{creds.password_var}")
        elif status == HTTPStatus.UNAUTHORIZED:
            what = f"the credentials in {creds.where} were refused; check them"
        else:
            what = f"the account in {creds.where} may not push to it; check its permissions"
        return f"registry {self.host} refused access to {repository} (HTTP {status}): {what}"

    def _expect(self, response: requests.Response, ok: tuple, what: str) -> requests.Response:
        if response.status_code not in ok:
            detail = response.text[:300].strip()
            raise RegistryError(f"registry {self.host}: {what} answered HTTP "
                                f"{response.status_code}: {detail}")
        return response

    # -- manifests --------------------------------------------------------------------
    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str] | None:
        """(body, media type, digest) of ``repository:reference``, or None when absent."""
        def attempt():
            response = self._send("GET", f"/v2/{repository}/manifests/{reference}", repository,
                                  headers={"Accept": MANIFEST_TYPES})
            if response.status_code == HTTPStatus.NOT_FOUND:
                return None
            self._expect(response, (HTTPStatus.OK,), f"GET manifest {repository}:{reference}")
            body = response.content
            digest = sha256_bytes(body)
            if reference.startswith("sha256:") and digest != reference:
                raise Transient(f"manifest {reference} arrived with digest {digest}")
            return body, response.headers.get("Content-Type", ""), digest
        return self.call(attempt)

    def digest(self, repository: str, reference: str) -> str | None:
        """The manifest digest of ``repository:reference`` (a HEAD), or None when absent."""
        def attempt():
            response = self._send("HEAD", f"/v2/{repository}/manifests/{reference}", repository,
                                  headers={"Accept": MANIFEST_TYPES})
            if response.status_code == HTTPStatus.NOT_FOUND:
                return None
            self._expect(response, (HTTPStatus.OK,), f"HEAD manifest {repository}:{reference}")
            return response.headers.get("Docker-Content-Digest")
        return self.call(attempt)

    def tags(self, repository: str) -> list[str]:
        """The repository's tags (empty when it does not exist), every page of them.

        Registries answer in pages (Docker Hub, GHCR, and Distribution when asked with
        ``?n=``) and name the next one in a ``Link: <URL>; rel="next"`` header, which is
        followed; each page is retried on its own."""
        found: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list"
        seen = set()
        while url and url not in seen:  # a registry that links a page to itself ends here
            seen.add(url)
            page, url = self.call(lambda url=url: self._tags_page(repository, url))
            found += page
        return found

    def _tags_page(self, repository: str, url: str) -> tuple[list[str], str | None]:
        """One page of tags and the URL of the next (None: the last page)."""
        response = self._send("GET", url, repository)
        if response.status_code == HTTPStatus.NOT_FOUND:
            return [], None
        self._expect(response, (HTTPStatus.OK,), f"GET tags of {repository}")
        try:
            tags = list(response.json().get("tags") or [])
        except (ValueError, AttributeError):
            raise RegistryError(f"registry {self.host}: the tag list of {repository} is "
                                "not JSON") from None
        return tags, response.links.get("next", {}).get("url")

    def put_manifest(self, repository: str, reference: str, body: bytes,
                     media_type: str) -> str:
        """Upload a manifest under a tag or its digest; returns its digest."""
        digest = sha256_bytes(body)

        def attempt():
            response = self._send("PUT", f"/v2/{repository}/manifests/{reference}", repository,
                                  headers={"Content-Type": media_type}, data=body)
            self._expect(response, (HTTPStatus.OK, HTTPStatus.CREATED),
                         f"PUT manifest {repository}:{reference}")
            return response.headers.get("Docker-Content-Digest", digest)
        answered = self.call(attempt)
        if answered != digest:
            raise RegistryError(f"registry {self.host} stored {repository}:{reference} as "
                                f"{answered}, not {digest}")
        return digest

    # -- blobs ------------------------------------------------------------------------
    def has_blob(self, repository: str, digest: str) -> bool:
        def attempt():
            response = self._send("HEAD", f"/v2/{repository}/blobs/{digest}", repository)
            return response.status_code == HTTPStatus.OK
        return self.call(attempt)

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Cross-repository mount on this registry; False when the registry declined."""
        def attempt():
            response = self._send("POST", f"/v2/{repository}/blobs/uploads/", repository,
                                  params={"mount": digest, "from": source_repository})
            if response.status_code == HTTPStatus.CREATED:
                return True
            self._expect(response, (HTTPStatus.ACCEPTED,), f"mount {digest} into {repository}")
            # Declined: close the upload session it opened instead.
            location = response.headers.get("Location")
            if location:
                self._send("DELETE", location, repository)
            return False
        return self.call(attempt)

    def upload_blob(self, repository: str, digest: str, path: Path) -> None:
        """Monolithic upload (POST, then PUT with the digest); the registry checks it."""
        size = path.stat().st_size

        def attempt():
            response = self._send("POST", f"/v2/{repository}/blobs/uploads/", repository)
            self._expect(response, (HTTPStatus.ACCEPTED,), f"start upload to {repository}")
            location = response.headers["Location"]
            with open(path, "rb") as handle:
                response = self._send("PUT", location, repository, params={"digest": digest},
                                      headers={"Content-Type": "application/octet-stream",
                                               "Content-Length": str(size)}, data=handle)
            self._expect(response, (HTTPStatus.CREATED,), f"upload {digest} to {repository}")
        self.call(attempt)

    def upload_bytes(self, repository: str, body: bytes) -> str:
        """A small blob (a config) from memory; returns its digest."""
        digest = sha256_bytes(body)
        if not self.has_blob(repository, digest):
            with tempfile.NamedTemporaryFile() as handle:
                handle.write(body)
                handle.flush()
                self.upload_blob(repository, digest, Path(handle.name))
        return digest

    def open_blob(self, repository: str, digest: str, offset: int = 0) -> requests.Response:
        """A streamed GET of a blob from byte ``offset`` (``Range: bytes=N-``; a registry
        may answer 200 with the whole blob).  One try: run it inside ``call``."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return self._send("GET", f"/v2/{repository}/blobs/{digest}", repository,
                          headers=headers, stream=True)

    def download_blob(self, repository: str, digest: str, target: Path) -> None:
        """Download into ``target``, checking the digest (a retry starts over)."""
        def attempt():
            response = self.open_blob(repository, digest)
            self._expect(response, (HTTPStatus.OK,), f"GET blob {digest} of {repository}")
            hasher = hashlib.sha256()
            try:
                with open(target, "wb") as handle:
                    for chunk in response.iter_content(CHUNK):
                        hasher.update(chunk)
                        handle.write(chunk)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.Timeout) as err:
                raise Transient(f"GET blob {digest}: connection dropped "
                                f"({type(err).__name__})") from None
            if "sha256:" + hasher.hexdigest() != digest:
                raise Transient(f"blob {digest} of {repository} arrived corrupted")
        self.call(attempt)

    def blob_bytes(self, repository: str, digest: str) -> bytes:
        """A small blob (a config), checked against its digest."""
        def attempt():
            response = self._send("GET", f"/v2/{repository}/blobs/{digest}", repository)
            self._expect(response, (HTTPStatus.OK,), f"GET blob {digest} of {repository}")
            if sha256_bytes(response.content) != digest:
                raise Transient(f"blob {digest} of {repository} arrived corrupted")
            return response.content
        return self.call(attempt)
