"""Talking to an OCI distribution registry over its HTTP API (the lab's, or a mirror).

Only what the build stage needs: does a tag exist, and with which manifest digest.
Transient failures (429, 5xx, dropped connections) are retried with backoff.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

MANIFEST_TYPES = ("application/vnd.oci.image.index.v1+json, "
                  "application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.list.v2+json, "
                  "application/vnd.docker.distribution.manifest.v2+json")


class RegistryError(RuntimeError):
    """The registry answered with an error that retrying will not fix."""


def base_url(registry: str) -> str:
    host = registry.split(":")[0]
    local = host in ("localhost",) or host.startswith("127.") or host == "[::1]"
    return f"{'http' if local else 'https'}://{registry}"


def _transient(err: BaseException) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code == 429 or err.code >= 500
    return isinstance(err, (urllib.error.URLError, ConnectionError, TimeoutError))


def manifest_digest(registry: str, repository: str, tag: str) -> str | None:
    """The digest of ``repository:tag``, or None when the registry does not have it."""
    try:
        return _manifest_digest(registry, repository, tag)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        raise RegistryError(f"registry {registry} did not answer for {repository}:{tag} "
                            f"after retries ({err}); is it up? (`python -m pipeline lab status`)"
                            ) from None


@retry(retry=retry_if_exception(_transient), wait=wait_exponential(multiplier=0.5, max=8),
       stop=stop_after_delay(60), reraise=True)
def _manifest_digest(registry: str, repository: str, tag: str) -> str | None:
    request = urllib.request.Request(f"{base_url(registry)}/v2/{repository}/manifests/{tag}",
                                     method="HEAD", headers={"Accept": MANIFEST_TYPES})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        if _transient(err):
            raise
        raise RegistryError(f"registry {registry} refused {repository}:{tag} "
                            f"(HTTP {err.code} {err.reason})") from None


def answers(registry: str) -> bool:
    """True when ``/v2/`` answers (200, or 401 for a registry that wants a login)."""
    try:
        with urllib.request.urlopen(f"{base_url(registry)}/v2/", timeout=5):
            return True
    except urllib.error.HTTPError as err:
        return err.code == 401
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
