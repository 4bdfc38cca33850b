"""What each OS value is upstream right now, cheaply, for build_ids and "already published".

* A ``bootstrap`` OS: the sha256 of the suite's ``InRelease`` file on its mirror.  It signs
  the package indices, so it changes exactly when the packages a bootstrap would install
  can change; reading it costs one small download instead of a bootstrap.
* An ``image`` OS: the manifest digest of the reference, asked through ``PIPELINE_MIRRORS``.

Both go into the build_id of every job built on that OS, at plan time (``--mode nightly``
asks whether that build_id is published) and at build time alike.

* An image's ``upstream:`` files (matrix.yaml): the sha256 of each URL's content, e.g. a
  dnf repository's ``repodata/repomd.xml`` or NVIDIA's CUDA repository's, which change
  when the packages a recipe installs from there change (``file_identity``).

Every URL is read once per run, with the same retries and timeout, and an unreachable one
is reported the same plain way (``UpstreamUnknown``).

Example::

    Upstream(settings).identity({"os": "debian12", "os_source": "bootstrap",
                                 "os_suite": "bookworm", "os_mirror": "http://deb.debian.org/debian"})
    # 'inrelease:sha256:...'
    Upstream(settings).file_identity("https://example.org/repo/repodata/repomd.xml")
    # 'https://example.org/repo/repodata/repomd.xml sha256:...'
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http import HTTPStatus

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from pipeline.settings import Settings
from pipeline.tools.digests import sha256_bytes
from pipeline.tools.registry.client import Registry, RegistryError
from pipeline.tools.registry.references import mirrored, split_reference
from pipeline.tools.registry.retries import RetryPolicy


class UpstreamUnknown(RuntimeError):
    """The OS's upstream could not be asked; the message says which and what to do."""


@dataclass
class Upstream:
    """Asks each upstream once per run (thread-safe); answers and failures are cached.

    ``patience``: how long, in seconds, a URL is retried (connection failures, 5xx) before
    it counts as unreachable."""

    settings: Settings
    patience: float = 60.0
    _known: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def identity(self, variables: dict) -> str:
        """What the cell's OS is upstream now (see the module's text)."""
        if variables.get("os_source") == "bootstrap":
            url = f"{variables['os_mirror'].rstrip('/')}/dists/{variables['os_suite']}/InRelease"
            return "inrelease:" + self._once(url, lambda: self._sha256(
                url, "check the suite and mirror in matrix.yaml"))
        reference = mirrored(variables["os_image"], self.settings.mirrors)
        return self._once(("image", reference), lambda: self._image(reference))

    def file_identity(self, url: str) -> str:
        """``URL sha256:HEX`` of an ``upstream:`` file's content now."""
        if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
            raise UpstreamUnknown(f"upstream URL '{url}' is not an http:// or https:// URL; "
                                  "check the image's upstream in matrix.yaml")
        return f"{url} " + self._once(url, lambda: self._sha256(
            url, "check the image's upstream URLs in matrix.yaml"))

    def _once(self, key: str | tuple, ask) -> str:
        """``ask()``'s answer for ``key``, asked once per run; a failure is kept too."""
        with self._lock:
            if key not in self._known:
                try:
                    self._known[key] = ask()
                except UpstreamUnknown as err:
                    # Asked once per run: an unreachable upstream must not cost its retries
                    # again for every job that depends on it.
                    self._known[key] = err
            found = self._known[key]
        if isinstance(found, UpstreamUnknown):
            raise UpstreamUnknown(str(found))
        return found

    def _sha256(self, url: str, fix: str) -> str:
        """``sha256:HEX`` of what ``url`` serves; UpstreamUnknown when it cannot be read."""
        try:
            for attempt in Retrying(retry=retry_if_exception_type(requests.RequestException),
                                    wait=wait_exponential(multiplier=0.5, max=8),
                                    stop=stop_after_delay(self.patience), reraise=True):
                with attempt:
                    response = requests.get(url, timeout=30)
                    if response.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
                        response.raise_for_status()
        except requests.RequestException as err:
            raise UpstreamUnknown(f"cannot read {url} ({type(err).__name__}); is the mirror "
                                  "reachable from here?") from None
        if response.status_code != HTTPStatus.OK:
            raise UpstreamUnknown(f"{url} answered HTTP {response.status_code}; {fix}")
        return sha256_bytes(response.content)

    def _image(self, reference: str) -> str:
        host, name, tag = split_reference(reference)
        try:
            # Few retries: an unreachable upstream is common (air-gapped) and must not stall.
            found = Registry(host, policy=RetryPolicy(attempts=3, total_seconds=20)).manifest(
                name, tag)
        except RegistryError as err:
            hint = ("" if self.settings.mirrors else
                    "; if this site has a mirror, set PIPELINE_MIRRORS=docker.io=<mirror host>")
            raise UpstreamUnknown(f"cannot ask for {reference}: {err}{hint}") from None
        if found is None:
            raise UpstreamUnknown(f"{reference} does not exist upstream; check matrix.yaml")
        return found[2]
