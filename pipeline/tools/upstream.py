"""What each OS value is upstream right now, cheaply, for build_ids and "already published".

* A ``bootstrap`` OS: the sha256 of the suite's ``InRelease`` file on its mirror.  It signs
  the package indices, so it changes exactly when the packages a bootstrap would install
  can change; reading it costs one small download instead of a bootstrap.
* An ``image`` OS: the manifest digest of the reference, asked through ``PIPELINE_MIRRORS``.

Both go into the build_id of every job built on that OS, at plan time (``--mode nightly``
asks whether that build_id is published) and at build time alike.

Example::

    Upstream(settings).identity({"os": "debian12", "os_source": "bootstrap",
                                 "os_suite": "bookworm", "os_mirror": "http://deb.debian.org/debian"})
    # 'inrelease:sha256:...'
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from pipeline.settings import Settings
from pipeline.tools.registry.client import Registry, RegistryError, RetryPolicy
from pipeline.tools.registry.references import mirrored, split_reference


class UpstreamUnknown(RuntimeError):
    """The OS's upstream could not be asked; the message says which and what to do."""


@dataclass
class Upstream:
    """Asks each upstream once per run (thread-safe); answers and failures are cached."""

    settings: Settings
    _known: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def identity(self, variables: dict) -> str:
        if variables.get("os_source") == "bootstrap":
            key = (variables["os_mirror"], variables["os_suite"])
            ask = self._inrelease
        else:
            key = (mirrored(variables["os_image"], self.settings.mirrors),)
            ask = self._image
        with self._lock:
            if key not in self._known:
                try:
                    self._known[key] = ask(*key)
                except UpstreamUnknown as err:
                    # Asked once per run: an unreachable upstream must not cost its retries
                    # again for every job built on that OS.
                    self._known[key] = err
            found = self._known[key]
        if isinstance(found, UpstreamUnknown):
            raise UpstreamUnknown(str(found))
        return found

    @staticmethod
    def _inrelease(mirror: str, suite: str) -> str:
        url = f"{mirror.rstrip('/')}/dists/{suite}/InRelease"
        try:
            for attempt in Retrying(retry=retry_if_exception_type(requests.RequestException),
                                    wait=wait_exponential(multiplier=0.5, max=8),
                                    stop=stop_after_delay(60), reraise=True):
                with attempt:
                    response = requests.get(url, timeout=30)
                    if response.status_code >= 500:
                        response.raise_for_status()
        except requests.RequestException as err:
            raise UpstreamUnknown(f"cannot read {url} ({type(err).__name__}); is the mirror "
                                  "reachable from here?") from None
        if response.status_code != 200:
            raise UpstreamUnknown(f"{url} answered HTTP {response.status_code}; check the "
                                  "suite and mirror in matrix.yaml")
        return "inrelease:sha256:" + hashlib.sha256(response.content).hexdigest()

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
