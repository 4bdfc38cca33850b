"""One blob downloaded by digest into a ``.part`` file, resumed where it stopped.

The ``.part`` file is what has arrived so far.  Each try (a new run, or the client's retry
after a dropped connection) asks for the rest with ``Range: bytes=N-``; a registry that
answers 206 from byte N is continued, one that answers 200 (it ignores ranges) or 416 is
restarted from zero.  The sha256 covers the whole file: on a resumed try the bytes already
there are hashed first, then the rest as it streams.  Whether the digest is the right one is
for the caller to judge (:func:`fetch` returns it); more bytes than the expected size stop
the download.

Distribution's registry serves blobs with Go's ``http.ServeContent``, which honours ranges;
a registry that redirects to storage is followed (``requests`` keeps the Range header).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import requests

from pipeline.tools.registry.client import CHUNK, Registry, RegistryError
from pipeline.tools.registry.retries import Transient

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class TooBig(RegistryError):
    """The registry sent more bytes than the catalogue says the blob has."""


@dataclass(frozen=True)
class Fetched:
    digest: str  # sha256:<hex> of the whole .part file
    resumed_from: int  # bytes that were already there when the last try started (0: none)
    received: int  # bytes this call received over the network


def fetch(registry: Registry, repository: str, digest: str, size: int, part: Path,
          progress: Callable[[int], None] = lambda done: None) -> Fetched:
    """Download ``repository@digest`` (``size`` bytes) into ``part``, resuming what is there.

    ``progress(done)`` is told the bytes present after each chunk.  Transient failures are
    retried under the registry's policy, each try resuming; RegistryError when they last.
    """
    received = 0

    def attempt() -> Fetched:
        nonlocal received
        offset = part.stat().st_size if part.exists() else 0
        if offset > size:  # not this blob's beginning: start over
            part.unlink()
            offset = 0
        if offset == size and size > 0:
            return Fetched("sha256:" + _hasher(part, offset).hexdigest(), offset, received)
        response = registry.open_blob(repository, digest, offset)
        with response:
            start = _start(response, offset, part, repository, digest)
            hasher = _hasher(part, start)
            done = start
            progress(done)
            try:
                with open(part, "r+b" if start else "wb") as handle:
                    handle.seek(start)
                    handle.truncate()
                    for chunk in response.iter_content(CHUNK):
                        done += len(chunk)
                        if done > size:
                            raise TooBig(f"{registry.host}/{repository}@{digest} sent more "
                                         f"than the {size} bytes the catalogue says it has")
                        handle.write(chunk)
                        hasher.update(chunk)
                        received += len(chunk)
                        progress(done)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.Timeout) as err:
                raise Transient(f"GET blob {digest}: connection dropped at {done} of {size} "
                                f"bytes ({type(err).__name__}); resuming") from None
        if done != size:
            raise Transient(f"GET blob {digest}: the answer ended at {done} of {size} bytes")
        return Fetched("sha256:" + hasher.hexdigest(), start, received)

    return registry.call(attempt)


def _start(response: requests.Response, offset: int, part: Path, repository: str,
           digest: str) -> int:
    """Where the answer's bytes start: ``offset`` for a matching 206, 0 for a 200.  A range
    the registry refuses or answers from elsewhere: ``part`` is removed, the next try starts
    from zero."""
    if response.status_code == HTTPStatus.PARTIAL_CONTENT:
        found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if found and int(found.group(1)) == offset:
            return offset
        part.unlink(missing_ok=True)
        raise Transient(f"GET blob {digest}: a range that does not start at byte {offset} "
                        f"({response.headers.get('Content-Range')!r}); starting over")
    if response.status_code == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
        part.unlink(missing_ok=True)
        raise Transient(f"GET blob {digest}: the registry refused the range from byte "
                        f"{offset}; starting over")
    if response.status_code != HTTPStatus.OK:
        raise RegistryError(f"GET blob {digest} of {repository} answered HTTP "
                            f"{response.status_code}: {response.text[:300].strip()}")
    return 0


def _hasher(path: Path, length: int):
    """A sha256 of the first ``length`` bytes of ``path`` (none when ``length`` is 0)."""
    hasher = hashlib.sha256()
    if length:
        with open(path, "rb") as handle:
            left = length
            while left and (chunk := handle.read(min(CHUNK, left))):
                hasher.update(chunk)
                left -= len(chunk)
    return hasher
